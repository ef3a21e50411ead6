"""The `ladder` command line: builds the parser and runs the chosen verb, whose module in
`tui.commands` is imported only then (so `ladder models list` does not load Textual)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from tui import __version__
from tui.cards import SelectionError
from tui.commands import output
from tui.commands.options import UsageError
from tui.engine.schedule import DEFAULT_POLICY, SCHEDULES
from tui.gguf import GGUFError
from tui.textsafe import safe_text


class Parser(argparse.ArgumentParser):
    """Argument errors as the README promises: one `ladder:` line and exit code 2, with a
    pointer to the help instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, safe_text(f"ladder: {message}; see `{self.prog} --help`") + "\n")

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        # Refuse unknown options here, in the (sub)command that got them, so that the hint names
        # its help; argparse would pass them up and report them against plain `ladder`.
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--lineup", help="a named lineup (default: offline); see `ladder models list`")
    group.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ID|PATH",
        help="a model card id or a GGUF file; repeat for several (adds to --lineup if given)",
    )
    _endpoint_options(group, "add every model an OpenAI-compatible server serves (or just MODEL); repeatable")
    group.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload to the GPU (overrides the cards)")
    group.add_argument("--ctx", type=int, metavar="TOKENS", help="context length (overrides the cards)")
    group.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=DEFAULT_POLICY,
        help="how models share the CPU cores; auto chooses for each turn from this machine's measurements "
        "(default: %(default)s)",
    )
    group.add_argument("--sessions-dir", metavar="DIR", help="where transcripts are saved")
    sampling = parser.add_argument_group("conversation")
    sampling.add_argument("--scenario", metavar="ID", help="start in a scenario; see `ladder scenarios list`")
    sampling.add_argument("--system", default="", help="system prompt (default: the scenario's)")
    sampling.add_argument("--temperature", type=float)
    sampling.add_argument("--top-p", type=float)
    sampling.add_argument("--top-k", type=int)
    sampling.add_argument("--min-p", type=float)
    sampling.add_argument("--repeat-penalty", type=float)
    sampling.add_argument("--max-tokens", type=int)
    sampling.add_argument("--seed", type=int, help="the same seed and parameters give the same replies")
    sampling.add_argument(
        "--model-param",
        action="append",
        default=[],
        metavar="ID:NAME=VALUE",
        help="a sampling parameter for one model only, e.g. gemma-3-270m:temperature=0.2",
    )
    sampling.add_argument(
        "--logprobs",
        action="store_true",
        help="record each token's probability and its 5 likeliest alternatives in the transcript (a little slower)",
    )


def _endpoint_options(group: Any, purpose: str) -> None:
    group.add_argument("--endpoint", action="append", default=[], metavar="URL[#MODEL]", help=purpose)
    group.add_argument(
        "--api-key-env", metavar="VAR", help="the environment variable holding the --endpoint servers' API key"
    )
    group.add_argument(
        "--stall-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="fail an --endpoint reply after this long without a byte from its server (default: %(default)g)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ladder",
        description="Compare local language models of increasing size "
        "side by side. With no command, opens the chat app.",
    )
    parser.add_argument("--version", action="version", version=f"ladder {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat = commands.add_parser("chat", help="the chat app (the default)")
    _model_options(chat)
    chat.add_argument(
        "--blind",
        action="store_true",
        help="start a blind session: panes are Model A, B… in a shuffled order, names hidden until revealed",
    )
    ask = commands.add_parser("ask", help="send one turn to every model and print the replies")
    ask.add_argument("prompt", nargs="?", help="the user turn (with --scenario and no prompt: its next item)")
    ask.add_argument("--items", type=int, default=1, metavar="N", help="with --scenario: ask its next N items")
    ask.add_argument("--json", action="store_true", help="one JSON object per event line")
    _model_options(ask)
    models = commands.add_parser("models", help="list, fetch or verify model files")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = models_commands.add_parser("list", help="every card: family, size, quantisation, source, present or not")
    _endpoint_options(listing, "list the models this OpenAI-compatible server serves instead")
    fetch = models_commands.add_parser("fetch", help="assemble or download a model or a whole lineup")
    fetch.add_argument("target", metavar="ID|LINEUP")
    verify = models_commands.add_parser("verify", help="check files against their cards' sha256")
    verify.add_argument("target", nargs="?", metavar="ID|LINEUP", help="default: every present model")
    bench = commands.add_parser("bench", help="measure speed against baselines in the same run")
    bench.add_argument("--lineup", help="default: offline")
    bench.add_argument("--model", action="append", default=[], metavar="ID|PATH")
    bench.add_argument("--tokens", type=int, default=64, help="tokens per reply (default: %(default)s)")
    bench.add_argument(
        "--turns", type=int, default=10, help="turns of the KV-cache conversation (default: %(default)s)"
    )
    bench.add_argument(
        "--schedule", action="append", choices=SCHEDULES, help="schedules to compare (default: all, auto last)"
    )
    bench.add_argument(
        "--skip", action="append", choices=["throughput", "ladder", "kv", "app", "startup"], help="leave out a figure"
    )
    bench.add_argument("--llama-bench", type=Path, metavar="PATH", help="a llama-bench binary to compare with")
    bench.add_argument(
        "--build-llama-bench",
        action="store_true",
        help="build llama-bench from llama-cpp-python's vendored llama.cpp first (minutes)",
    )
    bench.add_argument("--repeat", type=int, default=3, help="rounds of the whole-ladder figure (default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="one round of everything")
    bench.add_argument("--json", action="store_true", help="print only the JSON report")
    scenarios = commands.add_parser("scenarios", help="list scenarios or show one")
    scenarios_commands = scenarios.add_subparsers(dest="scenarios_command", metavar="ACTION", required=True)
    scenarios_commands.add_parser("list", help="every scenario: id, title, items, check")
    show = scenarios_commands.add_parser("show", help="a scenario's description, prompts and items")
    show.add_argument("id", metavar="ID")
    _lab_parser(commands)
    _sessions_parser(commands)
    _leaderboard_parser(commands)
    return parser


def _lab_parser(commands: Any) -> None:
    lab = commands.add_parser("lab", help="score the models on scenario items; chart accuracy against size")
    lab.add_argument(
        "tasks",
        nargs="*",
        metavar="TASK",
        help="scenarios with items and a check (default: emoji-movie emoji-movie-choices arithmetic unscramble ipa)",
    )
    run = lab.add_argument_group("the run")
    run.add_argument("--items", type=int, metavar="N", help="items per task, each in every variant (default: 20)")
    run.add_argument("--seed", type=int, metavar="S", help="the seed of generated items, e.g. arithmetic (default: 0)")
    run.add_argument(
        "--form",
        choices=("chat", "few-shot"),
        help="how every model is asked (default: chat for instruct models, few-shot for base models)",
    )
    run.add_argument("--out", type=Path, metavar="FILE", help="the results file (default: <sessions dir>/lab/...)")
    run.add_argument("--resume", type=Path, metavar="FILE", help="finish a stopped run: its tasks, items and models")
    run.add_argument("--report", type=Path, metavar="FILE", help="print a saved run's report; loads no model")
    run.add_argument("--sessions-dir", metavar="DIR", help="the sessions folder, home of lab/ (default results)")
    report = lab.add_argument_group("the report")
    report.add_argument("--svg", type=Path, metavar="FILE", help="also write the charts as an SVG picture")
    report.add_argument("--markdown", type=Path, metavar="FILE", help="also write a Markdown table per task")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    models = lab.add_argument_group("models")
    models.add_argument("--lineup", help="a named lineup (default: offline); see `ladder models list`")
    models.add_argument(
        "--model", action="append", default=[], metavar="ID|PATH", help="a model card id or a GGUF file; repeatable"
    )
    _endpoint_options(models, "add every model an OpenAI-compatible server serves (or just MODEL); repeatable")
    models.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload to the GPU (overrides cards)")
    models.add_argument("--ctx", type=int, metavar="TOKENS", help="context length (overrides the cards)")
    models.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=DEFAULT_POLICY,
        help="how models share the CPU cores (default: %(default)s)",
    )


def _sessions_parser(commands: Any) -> None:
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument(
        "--sessions-dir",
        metavar="DIR",
        help="the sessions folder (default: ./sessions if it exists, else the user data folder)",
    )
    sessions = commands.add_parser("sessions", help="list, show, search or export saved sessions")
    actions = sessions.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[folder], help="every session, newest first")
    listing.add_argument("--limit", type=int, metavar="N", help="only the newest N")
    show = actions.add_parser("show", parents=[folder], help="a session turn by turn, with every reply")
    show.add_argument("id", metavar="ID", help="a session id, or the start of one")
    search = actions.add_parser("search", parents=[folder], help="sessions whose prompts or replies contain TEXT")
    search.add_argument("text", nargs="?", metavar="TEXT", help="found ignoring case; none: only the filters")
    search.add_argument("--model", metavar="M", help="only sessions with a model whose id contains M")
    search.add_argument("--scenario", metavar="S", help="only sessions of scenario S")
    search.add_argument("--since", metavar="YYYY-MM-DD", help="only sessions created on or after this day")
    search.add_argument("--until", metavar="YYYY-MM-DD", help="only sessions created on or before this day")
    export = actions.add_parser("export", parents=[folder], help="a session as Markdown, HTML or JSON")
    export.add_argument("id", metavar="ID", help="a session id, or the start of one")
    export.add_argument("--format", metavar="md|html|json", help="default: from the -o file's suffix, else md")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default, or -: standard output)")
    export.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def _leaderboard_parser(commands: Any) -> None:
    board = commands.add_parser("leaderboard", help="rank the models by the votes in the saved sessions")
    board.add_argument("--since", metavar="YYYY-MM-DD", help="only sessions created on or after this day")
    board.add_argument("--scenario", metavar="ID", help="only sessions of this scenario")
    board.add_argument("--all", action="store_true", help="also count votes cast with names shown and review marks")
    board.add_argument("--markdown", action="store_true", help="print the leaderboard as Markdown")
    board.add_argument("--sessions-dir", metavar="DIR", help="the sessions folder (default: as for `ladder sessions`)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["chat", *argv]  # `ladder --seed 7` is `ladder chat --seed 7`
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except (UsageError, SelectionError, GGUFError) as problem:
        output.error(str(problem))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `ladder scenarios show x | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run_command(args: argparse.Namespace) -> int:
    """The verb's `run`, its module imported now: each verb loads only what it needs."""
    if args.command == "chat":
        from tui.commands import chat

        return chat.run(args)
    if args.command == "ask":
        from tui.commands import ask

        return ask.run(args)
    if args.command == "models":
        from tui.commands import models

        return models.run(args)
    if args.command == "scenarios":
        from tui.commands import scenarios

        return scenarios.run(args)
    if args.command == "sessions":
        from tui.commands import sessions

        return sessions.run(args)
    if args.command == "lab":
        from tui.commands import lab

        return lab.run(args)
    if args.command == "leaderboard":
        from tui.commands import leaderboard

        return leaderboard.run(args)
    from tui.commands import bench

    return bench.run(args)


if __name__ == "__main__":
    sys.exit(main())
