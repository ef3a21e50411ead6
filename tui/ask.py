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
from tui.cards import load_catalog
from tui.cli import chosen_cards, model_params, report_problems, sampling_params
from tui.engine.base import Backend
from tui.engine.events import Finished, Notice, TextPiece, TurnEvent
from tui.engine.local import Engine
from tui.session import Session
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


def _json_line(model: Backend, event: TurnEvent, out: TextIO) -> None:
    record: dict[str, Any] = {"model": model.card.id, "event": type(event).__name__, **asdict(event)}
    out.write(json.dumps(record, ensure_ascii=True) + "\n")  # ASCII: no raw control bytes
    out.flush()


def summary_table(rows: list[tuple[Backend, Finished]]) -> str:
    header = ("model", "params", "TTFT", "tokens/s", "tokens", "finish")
    lines = [header]
    for model, done in rows:
        lines.append((
            model.card.name, model.card.params_label,
            "-" if done.ttft_s is None else f"{done.ttft_s:.2f}s",
            "-" if done.tokens_per_s is None else f"{done.tokens_per_s:.1f}",
            str(done.completion_tokens),
            done.finish_reason if done.status == "done" else done.status,
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                for row in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)


def _progress_printer() -> Any:
    shown: dict[str, int] = {}

    def progress(what: str, done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        if shown.get(what) != percent and sys.stderr.isatty():
            shown[what] = percent
            end = "\n" if done >= total else ""
            print(f"\r{what}: {percent}% of {total / 1e6:.0f} MB", end=end, file=sys.stderr, flush=True)

    return progress


async def _ask(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    report_problems(catalog)
    cards = chosen_cards(args, catalog)
    engine = Engine(policy=args.schedule)
    session = Session(
        [engine.model(card) for card in cards], sessions_dir=paths.sessions_dir(args.sessions_dir),
        params=sampling_params(args), model_params=model_params(args, cards), system=args.system,
        lineup=args.lineup or (None if args.model else "offline"),
        engine_info={"schedule": args.schedule, "cores": engine.cores},
    )
    out = sys.stdout
    try:
        if not args.json:
            print(f"loading {len(cards)} model(s)…", file=sys.stderr, flush=True)
        failed = await session.load(_progress_printer())
        for model_id, error in failed.items():
            print(f"ladder: {model_id}: {error}", file=sys.stderr)
        lines = LabelledLines({m.card.id: m.card.name for m in session.models}, out)
        results: list[tuple[Backend, Finished]] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: asyncio.ensure_future(session.cancel()))
        async for model, event in session.send(args.prompt):
            if args.json:
                _json_line(model, event, out)
            elif isinstance(event, Finished):
                note = f"[{event.status}: {event.error}]" if event.error else ""
                lines.end(model.card.id, safe_text(note))
            elif isinstance(event, TextPiece):
                lines.add(model.card.id, event.text)
            elif isinstance(event, Notice):
                lines.end(model.card.id, safe_text(f"[{event.message}]"))
            if isinstance(event, Finished):
                results.append((model, event))
        loop.remove_signal_handler(signal.SIGINT)
        answered_ids = {model.card.id for model, _ in results}
        results += [(model, Finished("error", "error", "", error=model.error))
                    for model in session.models if model.card.id not in answered_ids]
        results.sort(key=lambda pair: pair[0].card.params)
        if not args.json:
            print("\n" + summary_table(results), file=out)
        where = session.transcript.path
        if where:
            print(f"transcript: {where}", file=sys.stderr if args.json else out)
        answered = sum(1 for _, done in results if done.status == "done")
        if answered < len(cards):
            print(f"ladder: {answered} of {len(cards)} models answered", file=sys.stderr)
            return 1
        return 0
    finally:
        await session.close()


def run_ask(args: argparse.Namespace) -> int:
    return asyncio.run(_ask(args))
