"""`ladder ask`: one turn to every model, replies streamed as labelled lines, then a summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import stat
import sys
import textwrap
from dataclasses import asdict
from typing import Any, BinaryIO, TextIO

from tui import paths
from tui.checks import CheckResult, Item
from tui.commands import output
from tui.commands.options import UsageError, check_utf8, session_options
from tui.engine.base import Backend
from tui.engine.events import Finished, Notice, TextPiece, TurnEvent
from tui.labels import params_label
from tui.scenario import Scenario
from tui.session import Checked, Session
from tui.textsafe import safe_text
from tui.transcript import TranscriptError


class LabelledLines:
    """Interleaves several streams readably: each model's text is printed a whole
    (wrapped) line at a time, prefixed with the model's name."""

    def __init__(self, labels: dict[str, str], out: TextIO) -> None:
        labels = {key: safe_text(label) for key, label in labels.items()}  # names can come from a GGUF file
        width = max(map(len, labels.values()))
        self.labels = {key: label.ljust(width) for key, label in labels.items()}
        self.out = out
        self.text_width = max(20, shutil.get_terminal_size((100, 24)).columns - width - 3)
        self.pending: dict[str, str] = {key: "" for key in labels}

    def add(self, key: str, text: str) -> None:
        self.pending[key] += safe_text(text)
        *lines, self.pending[key] = self.pending[key].split("\n")
        for line in lines:
            self._print(key, line)
        while len(self.pending[key]) > self.text_width:
            head, _, rest = self.pending[key][: self.text_width].rpartition(" ")
            if not head:
                head, rest = self.pending[key][: self.text_width], ""
            self._print(key, head)
            self.pending[key] = rest + self.pending[key][self.text_width :]

    def end(self, key: str, note: str = "") -> None:
        if self.pending[key].strip():
            self._print(key, self.pending[key])
        self.pending[key] = ""
        if note:
            self._print(key, note)

    def _print(self, key: str, line: str) -> None:
        wrapped = textwrap.wrap(line, self.text_width) or [""]
        for part in wrapped:
            print(f"{self.labels[key]} │ {part}", file=self.out, flush=True)


def _json_line(model: Backend, event: TurnEvent | Checked, out: TextIO) -> None:
    record: dict[str, Any] = {"model": model.card.id, "event": type(event).__name__, **asdict(event)}
    out.write(json.dumps(record, ensure_ascii=True) + "\n")  # ASCII: no raw control bytes
    out.flush()


def summary_table(rows: list[tuple[Backend, Finished]], checks: dict[str, CheckResult] | None = None) -> str:
    header: tuple[str, ...] = ("model", "params", "TTFT", "tokens/s", "tokens", "finish")
    lines = [header + (("check",) if checks is not None else ())]
    for model, done in rows:
        line: tuple[str, ...] = (
            model.card.name,
            params_label(model.card.params),
            "-" if done.ttft_s is None else f"{done.ttft_s:.2f}s",
            "-" if done.tokens_per_s is None else f"{done.tokens_per_s:.1f}",
            str(done.completion_tokens),
            done.finish_reason if done.status == "done" else done.status,
        )
        if checks is not None:
            result = checks.get(model.card.id)
            line += (("✓ " if result.passed else "✗ ") + result.reason if result else "-",)
        lines.append(line)
    return output.table(lines)


def score_table(session: Session) -> str:
    variants = sorted({v for score in session.scores.values() for v in score.by_variant})
    rows: list[tuple[str, ...]] = [("model", "params", "score", *variants)]
    for model in session.models:
        score = session.scores.get(model.card.id)
        by_variant = [
            f"{score.by_variant[v][0]}/{score.by_variant[v][1]}" if score and v in score.by_variant else "-"
            for v in variants
        ]
        rows.append((model.card.name, params_label(model.card.params), str(score) if score else "-", *by_variant))
    return output.table(rows)


STDIN_LIMIT = 1_000_000  # bytes of prompt text from standard input; a redirected big file fails fast


def piped_stdin() -> BinaryIO | None:
    """Standard input when text is piped or redirected into it (a pipe or a file); None for a
    terminal, /dev/null or no standard input at all (under pytest, `fileno()` raises)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, ValueError, OSError):
        return None
    return sys.stdin.buffer if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) else None


def _read_stdin(stream: BinaryIO) -> str:
    data = stream.read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise UsageError(
            f"standard input is longer than the {STDIN_LIMIT // 1_000_000} MB a prompt may be; give a shorter text"
        )
    try:
        return data.decode("utf-8").rstrip()
    except UnicodeDecodeError as error:
        raise UsageError(
            f"standard input is not valid UTF-8 (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); convert it first, e.g. with iconv"
        ) from None


def prompt_text(args: argparse.Namespace) -> str | None:
    """The user turn, as `llm` takes it: the prompt argument; standard input, for `-` or when
    no prompt is given; or both, the argument, a blank line, then standard input. None: no
    prompt (a scenario's next items). Checked here, before anything is loaded or written."""
    prompt: str | None = args.prompt
    if prompt is not None:
        check_utf8(prompt, "the prompt")
    stream = piped_stdin()
    if prompt == "-":
        if stream is None:
            raise UsageError("`ladder ask -` reads the prompt from standard input, but nothing is piped into it")
        prompt = _read_stdin(stream)
    elif stream is not None:
        piped = _read_stdin(stream)
        if piped.strip():
            prompt = piped if prompt is None else f"{prompt}\n\n{piped}"
    if prompt is not None and not prompt.strip():
        raise UsageError("the prompt is empty; give some text")
    return prompt


def _turns(
    prompt: str | None, args: argparse.Namespace, scenario: Scenario | None, session: Session
) -> list[tuple[str, Item | None]]:
    """What to send: the scenario's opening message, then the prompt or its next items."""
    turns: list[tuple[str, Item | None]] = [(scenario.first_turn, None)] if scenario and scenario.first_turn else []
    if prompt is not None:
        return turns + [(prompt, None)]
    if scenario is None or not scenario.has_items:
        raise UsageError("give a prompt" + (f" (scenario '{scenario.id}' has no items)" if scenario else ""))
    progress = ScenarioProgress()
    session.items_asked = progress.next_index(scenario)
    if args.items < 1:
        raise UsageError("--items must be at least 1")
    turns += [(item.prompt, item) for item in (session.next_item() for _ in range(args.items))]
    progress.save(scenario, session.items_asked)
    return turns


class ScenarioProgress:
    """Where `ladder ask --scenario ID` left off in each scenario's items, so that
    asking again goes on with the next ones."""

    def __init__(self) -> None:
        self.path = paths.data_dir() / "scenario-progress.json"
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def next_index(self, scenario: Scenario) -> int:
        index = self.data.get(scenario.id, 0)
        count = scenario.item_count
        return index % count if isinstance(index, int) and count else 0

    def save(self, scenario: Scenario, index: int) -> None:
        self.data[scenario.id] = index
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1))


class Interrupts:
    """Ctrl+C. While the models load, or a second time, it stops the run at once; during a turn
    the first one cancels the replies in flight (saved as cancelled) and the run ends after them."""

    def __init__(self) -> None:
        self.count = 0
        self.task = asyncio.current_task()
        self.session: Session | None = None  # set when the turns start: from then on a turn can be cancelled

    def __call__(self) -> None:
        self.count += 1
        if self.session is not None and self.count == 1:
            asyncio.ensure_future(self.session.cancel())
        elif self.task is not None:
            self.task.cancel()


async def _ask(args: argparse.Namespace, prompt: str | None) -> int:
    interrupts = Interrupts()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupts)
    try:
        return await _ask_and_print(args, prompt, interrupts)
    except asyncio.CancelledError:
        if not interrupts.count:
            raise
        output.error("interrupted")
        return 130
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _ask_and_print(args: argparse.Namespace, prompt: str | None, interrupts: Interrupts) -> int:
    options = session_options(args)
    for problem in options.problems:
        output.warn(problem)
    scenario = options.scenario
    session = Session(
        [options.backend(card) for card in options.cards],
        sessions_dir=options.sessions_dir,
        params=options.params,
        model_params=options.model_params,
        lineup=options.lineup,
        system=options.system,
        scenario=scenario,
        engine_info=options.engine_info,
        logprobs=args.logprobs,
    )
    turns = _turns(prompt, args, scenario, session)
    saved = False
    try:
        code = await _load_and_ask(session, turns, args, interrupts)
    finally:
        try:
            await session.close()
            saved = True
        except TranscriptError as error:  # the disk filled up during the run: the replies were printed, not all saved
            output.error(str(error))
    return 1 if code == 0 and not saved else code


async def _load_and_ask(
    session: Session, turns: list[tuple[str, Item | None]], args: argparse.Namespace, interrupts: Interrupts
) -> int:
    out = sys.stdout
    if not args.json:
        print(f"loading {len(session.models)} model(s)…", file=sys.stderr, flush=True)
    failed = await session.load(output.progress_printer())
    for model_id, reason in failed.items():
        output.error(f"{model_id}: {reason}")
    interrupts.session = session
    all_answered = True
    for number, (text, item) in enumerate(turns, start=1):
        if interrupts.count:
            break
        if not args.json and len(turns) > 1:
            print(f"\n── turn {number} of {len(turns)}: {safe_text(text)}", file=out)
        all_answered &= await _one_turn(session, text, item, args, out)
    if session.scores and not args.json:
        print("\nscores\n" + score_table(session), file=out)
    where = session.transcript.path
    if where:
        print(safe_text(f"transcript: {where}"), file=sys.stderr if args.json else out)
    if interrupts.count:
        output.error("interrupted; replies cut short are saved as cancelled")
        return 130
    return 0 if all_answered else 1


async def _one_turn(session: Session, text: str, item: Item | None, args: argparse.Namespace, out: TextIO) -> bool:
    """Stream one turn as labelled lines (or JSON), then its summary; whether all answered."""
    lines = LabelledLines({m.card.id: m.card.name for m in session.models}, out)
    results: list[tuple[Backend, Finished]] = []
    checks: dict[str, CheckResult] = {}
    async for model, event in session.send(text, item):
        if args.json:
            _json_line(model, event, out)
        elif isinstance(event, Finished):
            lines.end(model.card.id, safe_text(f"[{event.status}: {event.error}]" if event.error else ""))
        elif isinstance(event, TextPiece):
            lines.add(model.card.id, event.text)
        elif isinstance(event, Notice):
            lines.end(model.card.id, safe_text(f"[{event.message}]"))
        if isinstance(event, Finished):
            results.append((model, event))
        elif isinstance(event, Checked):
            checks[model.card.id] = event.result
    answered_ids = {model.card.id for model, _ in results}
    results += [
        (model, Finished("error", "error", "", error=model.error))
        for model in session.models
        if model.card.id not in answered_ids
    ]
    results.sort(key=lambda pair: pair[0].card.order)
    if not args.json:
        print("\n" + summary_table(results, checks if session.scenario and session.scenario.check else None), file=out)
    answered = sum(1 for _, done in results if done.status == "done")
    if answered < len(results):
        output.error(f"{answered} of {len(results)} models answered")
    return answered == len(results)


def run(args: argparse.Namespace) -> int:
    # Standard input is read before the event loop takes over Ctrl+C, which could not stop a blocking read.
    prompt = prompt_text(args)
    return asyncio.run(_ask(args, prompt))
