"""What several commands print: aligned tables, download and hashing progress, and one-line
messages on standard error. Everything passes through `safe_text` on its way out: names
come from GGUF files and card files, reasons and replies from models."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tui.textsafe import safe_text

if TYPE_CHECKING:  # tui.store takes a while to import; `ladder` starts without it
    from tui.store import Progress


def table(rows: Sequence[Sequence[str]], align_numbers: bool = True) -> str:
    """Rows as aligned columns, the first (the header) over a rule; columns of numbers are
    right-aligned unless `align_numbers` is false."""
    cells = [[safe_text(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    numeric = [
        align_numbers and all(cell[:1].isdigit() or cell == "-" for cell in column[1:])
        for column in zip(*cells, strict=True)
    ]
    rendered = [
        "  ".join(
            cell.rjust(w) if right else cell.ljust(w) for cell, w, right in zip(row, widths, numeric, strict=True)
        )
        for row in cells
    ]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in rendered)


def progress_printer() -> Progress:
    """A progress callback that shows `what: N% of M MB` on a terminal's standard error, one
    line rewritten in place (nothing when standard error is a file or a pipe)."""
    shown: dict[str, int] = {}

    def progress(what: str, done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        if shown.get(what) != percent and sys.stderr.isatty():
            shown[what] = percent
            end = "\n" if done >= total else ""
            print(f"\r{safe_text(what)}: {percent}% of {total / 1e6:.0f} MB", end=end, file=sys.stderr, flush=True)

    return progress


def error(message: str) -> None:
    """`ladder: MESSAGE` on standard error."""
    print(safe_text(f"ladder: {message}"), file=sys.stderr)


def warn(message: str) -> None:
    """`ladder: warning: MESSAGE` on standard error: something was left out, the command goes on."""
    error(f"warning: {message}")
