"""`ladder ask`: one turn to every model, replies streamed as labelled lines, then a summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import textwrap
from dataclasses import asdict
from typing import Any, TextIO

from tui import paths
from tui.checks import CheckResult, Item
from tui.cli import UsageError, session_options
from tui.engine.base import Backend
from tui.engine.events import Finished, Notice, TextPiece, TurnEvent
from tui.scenario import Scenario
from tui.session import Checked, Session
from tui.textsafe import safe_text


class LabelledLines:
    """Interleaves several streams readably: each model's text is printed a whole
    (wrapped) line at a time, prefixed with the model's name."""

    def __init__(self, labels: dict[str, str], out: TextIO) -> None:
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
            self.pending[key] = rest + self.pending[key][self.text_width:]

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


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned columns; columns of numbers are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(cell[:1].isdigit() or cell == "-" for cell in column[1:]) for column in zip(*rows)]
    rendered = ["  ".join(cell.rjust(w) if right else cell.ljust(w) for cell, w, right in zip(row, widths, numeric))
                for row in rows]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in rendered)


def summary_table(rows: list[tuple[Backend, Finished]], checks: dict[str, CheckResult] | None = None) -> str:
    header: tuple[str, ...] = ("model", "params", "TTFT", "tokens/s", "tokens", "finish")
    lines = [header + (("check",) if checks is not None else ())]
    for model, done in rows:
        line: tuple[str, ...] = (
            model.card.name, model.card.params_label,
            "-" if done.ttft_s is None else f"{done.ttft_s:.2f}s",
            "-" if done.tokens_per_s is None else f"{done.tokens_per_s:.1f}",
            str(done.completion_tokens),
            done.finish_reason if done.status == "done" else done.status,
        )
        if checks is not None:
            result = checks.get(model.card.id)
            line += (("✓ " if result.passed else "✗ ") + result.reason if result else "-",)
        lines.append(line)
    return table(lines)


def score_table(session: Session) -> str:
    variants = sorted({v for score in session.scores.values() for v in score.by_variant})
    rows: list[tuple[str, ...]] = [("model", "params", "score", *variants)]
    for model in session.models:
        score = session.scores.get(model.card.id)
        by_variant = [f"{score.by_variant[v][0]}/{score.by_variant[v][1]}" if score and v in score.by_variant else "-"
                      for v in variants]
        rows.append((model.card.name, model.card.params_label, str(score) if score else "-", *by_variant))
    return table(rows)


def _progress_printer() -> Any:
    shown: dict[str, int] = {}

    def progress(what: str, done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        if shown.get(what) != percent and sys.stderr.isatty():
            shown[what] = percent
            end = "\n" if done >= total else ""
            print(f"\r{what}: {percent}% of {total / 1e6:.0f} MB", end=end, file=sys.stderr, flush=True)

    return progress


def _turns(args: argparse.Namespace, scenario: Scenario | None, session: Session) -> list[tuple[str, Item | None]]:
    """What to send: the scenario's opening message, then the prompt or its next items."""
    turns: list[tuple[str, Item | None]] = [(scenario.first_turn, None)] if scenario and scenario.first_turn else []
    if args.prompt:
        return turns + [(args.prompt, None)]
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


async def _ask(args: argparse.Namespace) -> int:
    options = session_options(args)
    for problem in options.problems:
        print(f"ladder: warning: {problem}", file=sys.stderr)
    cards, scenario = options.cards, options.scenario
    session = Session(
        [options.engine.model(card) for card in cards], sessions_dir=options.sessions_dir, params=options.params,
        model_params=options.model_params, lineup=options.lineup, system=options.system, scenario=scenario,
        engine_info=options.engine_info,
    )
    turns = _turns(args, scenario, session)
    out = sys.stdout
    try:
        if not args.json:
            print(f"loading {len(cards)} model(s)…", file=sys.stderr, flush=True)
        failed = await session.load(_progress_printer())
        for model_id, error in failed.items():
            print(f"ladder: {model_id}: {error}", file=sys.stderr)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: asyncio.ensure_future(session.cancel()))
        all_answered = True
        for number, (text, item) in enumerate(turns, start=1):
            if not args.json and len(turns) > 1:
                print(f"\n── turn {number} of {len(turns)}: {safe_text(text)}", file=out)
            all_answered &= await _one_turn(session, text, item, args, out)
        loop.remove_signal_handler(signal.SIGINT)
        if session.scores and not args.json:
            print("\nscores\n" + score_table(session), file=out)
        where = session.transcript.path
        if where:
            print(f"transcript: {where}", file=sys.stderr if args.json else out)
        return 0 if all_answered else 1
    finally:
        await session.close()


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
    results += [(model, Finished("error", "error", "", error=model.error))
                for model in session.models if model.card.id not in answered_ids]
    results.sort(key=lambda pair: pair[0].card.params)
    if not args.json:
        print("\n" + summary_table(results, checks if session.scenario and session.scenario.check else None), file=out)
    answered = sum(1 for _, done in results if done.status == "done")
    if answered < len(results):
        print(f"ladder: {answered} of {len(results)} models answered", file=sys.stderr)
    return answered == len(results)


def run_ask(args: argparse.Namespace) -> int:
    return asyncio.run(_ask(args))
