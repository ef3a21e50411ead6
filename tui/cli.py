"""The `ladder` command: the chat app by default, and `ask`, `models` for scripts."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tui import __version__, paths
from tui.cards import Catalog, ModelCard, SelectionError, load_catalog, select_models
from tui.engine.events import PARAM_NAMES, SamplingParams
from tui.engine.schedule import DEFAULT_POLICY, POLICIES
from tui.gguf import GGUFError
from tui.textsafe import safe_text

if TYPE_CHECKING:
    from tui.engine.local import Engine
    from tui.scenario import Scenario

COMMANDS = ("chat", "ask", "models", "scenarios", "sessions", "bench")


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """Argument errors as the README promises: one `ladder:` line and exit code 2, with a
    pointer to the help instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, safe_text(f"ladder: {message}; see `{self.prog} --help`") + "\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        # Refuse unknown options here, in the (sub)command that got them, so that the hint names
        # its help; argparse would pass them up and report them against plain `ladder`.
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


def check_utf8(text: str, what: str) -> None:
    """Refuse text that is not valid UTF-8. Python hands such bytes over as lone surrogates
    (surrogateescape), which no file or terminal can take later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = ord(text[error.start]) & 0xFF
        raise UsageError(f"{what} is not valid UTF-8 (byte 0x{byte:02x} at character {error.start + 1}); "
                         "give it as UTF-8 text") from None


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--lineup", help="a named lineup (default: offline); see `ladder models list`")
    group.add_argument("--model", action="append", default=[], metavar="ID|PATH",
                       help="a model card id or a GGUF file; repeat for several (adds to --lineup if given)")
    group.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload to the GPU (overrides the cards)")
    group.add_argument("--ctx", type=int, metavar="TOKENS", help="context length (overrides the cards)")
    group.add_argument("--schedule", choices=sorted(POLICIES), default=DEFAULT_POLICY,
                       help="how models share the CPU cores (default: %(default)s)")
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
    sampling.add_argument("--model-param", action="append", default=[], metavar="ID:NAME=VALUE",
                          help="a sampling parameter for one model only, e.g. gemma-3-270m:temperature=0.2")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ladder", description="Compare local language models of increasing size "
                    "side by side. With no command, opens the chat app.")
    parser.add_argument("--version", action="version", version=f"ladder {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat = commands.add_parser("chat", help="the chat app (the default)")
    _model_options(chat)
    ask = commands.add_parser("ask", help="send one turn to every model and print the replies")
    ask.add_argument("prompt", nargs="?", help="the user turn (with --scenario and no prompt: its next item)")
    ask.add_argument("--items", type=int, default=1, metavar="N", help="with --scenario: ask its next N items")
    ask.add_argument("--json", action="store_true", help="one JSON object per event line")
    _model_options(ask)
    models = commands.add_parser("models", help="list, fetch or verify model files")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_commands.add_parser("list", help="every card: family, size, quantisation, source, present or not")
    fetch = models_commands.add_parser("fetch", help="assemble or download a model or a whole lineup")
    fetch.add_argument("target", metavar="ID|LINEUP")
    verify = models_commands.add_parser("verify", help="check files against their cards' sha256")
    verify.add_argument("target", nargs="?", metavar="ID|LINEUP", help="default: every present model")
    bench = commands.add_parser("bench", help="measure speed against baselines in the same run")
    bench.add_argument("--lineup", help="default: offline")
    bench.add_argument("--model", action="append", default=[], metavar="ID|PATH")
    bench.add_argument("--tokens", type=int, default=64, help="tokens per reply (default: %(default)s)")
    bench.add_argument("--turns", type=int, default=10, help="turns of the KV-cache conversation (default: %(default)s)")
    bench.add_argument("--schedule", action="append", choices=sorted(POLICIES), help="schedules to compare (default: all)")
    bench.add_argument("--skip", action="append", choices=["throughput", "ladder", "kv", "app", "startup"],
                       help="leave out a figure")
    bench.add_argument("--llama-bench", type=Path, metavar="PATH", help="a llama-bench binary to compare with")
    bench.add_argument("--build-llama-bench", action="store_true",
                       help="build llama-bench from llama-cpp-python's vendored llama.cpp first (minutes)")
    bench.add_argument("--repeat", type=int, default=3, help="rounds of the whole-ladder figure (default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="one round of everything")
    bench.add_argument("--json", action="store_true", help="print only the JSON report")
    scenarios = commands.add_parser("scenarios", help="list scenarios or show one")
    scenarios_commands = scenarios.add_subparsers(dest="scenarios_command", metavar="ACTION", required=True)
    scenarios_commands.add_parser("list", help="every scenario: id, title, items, check")
    show = scenarios_commands.add_parser("show", help="a scenario's description, prompts and items")
    show.add_argument("id", metavar="ID")
    _sessions_parser(commands)
    return parser


def _sessions_parser(commands: Any) -> None:
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument("--sessions-dir", metavar="DIR", help="the sessions folder (default: ./sessions if it "
                        "exists, else the user data folder)")
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


def sampling_params(args: argparse.Namespace, base: SamplingParams | None = None) -> SamplingParams:
    """The parameters given on the command line, over `base` (defaults, or a scenario's)."""
    given = {name: getattr(args, name) for name in PARAM_NAMES if getattr(args, name, None) is not None}
    try:
        return (base or SamplingParams()).with_changes(given)
    except ValueError as error:
        raise UsageError(str(error)) from None


def model_params(args: argparse.Namespace, cards: list[ModelCard]) -> dict[str, dict[str, Any]]:
    """`--model-param ID:NAME=VALUE` options, checked, grouped by model id."""
    result: dict[str, dict[str, Any]] = {}
    ids = {card.id for card in cards}
    for option in args.model_param:
        model_id, _, assignment = option.partition(":")
        name, _, value = assignment.partition("=")
        if not (model_id and name and value):
            raise UsageError(f"--model-param wants ID:NAME=VALUE, not {option!r}")
        if model_id not in ids:
            raise UsageError(f"--model-param names '{model_id}', which is not in this lineup ({', '.join(sorted(ids))})")
        try:
            checked = SamplingParams().with_changes({name: value})
        except ValueError as error:
            raise UsageError(f"--model-param {option}: {error}") from None
        result.setdefault(model_id, {})[name] = getattr(checked, name)
    return result


def chosen_cards(args: argparse.Namespace, catalog: Catalog) -> list[ModelCard]:
    cards = select_models(catalog, args.lineup, args.model)
    changes: dict[str, Any] = {}
    if args.gpu_layers is not None:
        if args.gpu_layers < -1:
            raise UsageError("--gpu-layers must be -1 (all layers) or a number of layers, 0 or more")
        changes["gpu_layers"] = args.gpu_layers
    if args.ctx is not None:
        if args.ctx < 256:
            raise UsageError("--ctx must be at least 256 tokens")
        changes["context"] = args.ctx
    return [replace(card, **changes) for card in cards]


def report_problems(catalog: Catalog) -> None:
    for problem in catalog.problems:
        print(safe_text(f"ladder: warning: {problem}"), file=sys.stderr)


@dataclass
class SessionOptions:
    """What the options of `chat` and `ask` ask for, checked: the models, the scenario,
    the conversation settings, and the engine to run them."""

    catalog: Catalog
    cards: list[ModelCard]
    scenarios: dict[str, Scenario]
    scenario: Scenario | None
    problems: list[str]  # files that could not be read, cards and scenarios alike
    params: SamplingParams
    model_params: dict[str, dict[str, Any]]
    system: str
    lineup: str | None
    sessions_dir: Path
    engine: Engine

    @property
    def engine_info(self) -> dict[str, Any]:
        return {"schedule": self.engine.policy.name, "cores": self.engine.cores}


def session_options(args: argparse.Namespace) -> SessionOptions:
    from tui.engine.local import Engine
    from tui.scenario import load_scenarios

    check_utf8(args.system, "--system")
    catalog = load_catalog()
    cards = chosen_cards(args, catalog)
    scenarios, scenario_problems = load_scenarios()
    if args.scenario and args.scenario not in scenarios:
        raise UsageError(f"no scenario '{args.scenario}' (known: {', '.join(sorted(scenarios))}); "
                         "see `ladder scenarios list`")
    scenario = scenarios.get(args.scenario) if args.scenario else None
    params = sampling_params(args, SamplingParams().with_changes(scenario.params) if scenario else None)
    per_model = model_params(args, cards)
    sessions_dir = paths.sessions_dir(args.sessions_dir)
    try:  # before any model loads: a session that cannot be saved would be lost
        paths.check_sessions_folder(sessions_dir)
    except paths.FolderError as error:
        raise UsageError(f"{error}; choose another with --sessions-dir") from None
    return SessionOptions(
        catalog=catalog, cards=cards, scenarios=scenarios, scenario=scenario,
        problems=catalog.problems + scenario_problems, params=params, model_params=per_model,
        system=args.system or (scenario.system if scenario else ""),
        lineup=args.lineup or (None if args.model else "offline"), sessions_dir=sessions_dir,
        engine=Engine(policy=args.schedule),
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["chat", *argv]
    args = build_parser().parse_args(argv)
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "chat": _chat, "ask": _ask, "models": _models, "scenarios": _scenarios, "sessions": _sessions, "bench": _bench}
    try:
        return runners[args.command](args)
    except (UsageError, SelectionError, GGUFError) as error:
        print(safe_text(f"ladder: {error}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `ladder scenarios show x | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _chat(args: argparse.Namespace) -> int:
    from tui.app import run_app

    return run_app(args)


def _ask(args: argparse.Namespace) -> int:
    from tui.ask import run_ask

    return run_ask(args)


def _scenarios(args: argparse.Namespace) -> int:
    from tui.scenarios_command import run_scenarios

    return run_scenarios(args)


def _sessions(args: argparse.Namespace) -> int:
    from tui.sessions_command import run_sessions

    return run_sessions(args)


def _bench(args: argparse.Namespace) -> int:
    from tui.bench import run_bench

    if args.tokens < 8 or args.turns < 2 or args.repeat < 1:
        raise UsageError("--tokens must be at least 8, --turns at least 2 and --repeat at least 1")
    return run_bench(args, select_models(load_catalog(), args.lineup, args.model))


def _models(args: argparse.Namespace) -> int:
    from tui.models_command import run_models

    return run_models(args)


if __name__ == "__main__":
    # As `python -m tui.cli` this file is `__main__`, a second copy of the module, and the UsageError
    # that tui.ask and tui.models_command raise is tui.cli's: run tui.cli's main, which catches it.
    from tui.cli import main as cli_main

    sys.exit(cli_main())
