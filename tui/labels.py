"""How facts are said to a person, in one place: parameter counts, file sizes, a reply's
numbers, the letters of multiple-choice options. The pane, the exports and the command
line all use these, so a reply reads the same everywhere."""

from __future__ import annotations

from typing import Any

from tui.engine.events import Finished

CHOICE_LETTERS = "ABCDEFGHIJ"  # options of a multiple-choice item, in order


def params_label(params: int | None) -> str:
    """134515008 -> "135M", 1543714304 -> "1.5B", unknown (a remote model) -> "?"."""
    if params is None:
        return "?"
    if params >= 1e9:
        return f"{params / 1e9:.1f}B"
    return f"{round(params / 1e6)}M"


def saved_params_label(value: Any) -> str:
    """A parameter count read back from a file: "?" unless it is a positive whole number."""
    return params_label(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else "?"


def size_label(size: int | None) -> str:
    """98362432 -> "98 MB", 1117320768 -> "1.12 GB", unknown -> "?"."""
    if size is None:
        return "?"
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    return f"{round(size / 1e6)} MB"


def tokens_label(done: Finished) -> str:
    """A reply's token count; "~" when a remote server did not report it and it was counted here,
    a streamed chunk each (a chunk may hold several tokens)."""
    approximate = done.remote is not None and done.remote.get("tokens_counted_by") == "client"
    return f"{'~' if approximate else ''}{done.completion_tokens} tok"


def reply_stats(done: Finished) -> list[str]:
    """A finished reply's numbers: how it ended (finish reason, or cancelled / error), tokens,
    time to first token, speed. Joined with " · " wherever they are shown."""
    parts = [done.finish_reason if done.status == "done" else done.status, tokens_label(done)]
    if done.ttft_s is not None:
        parts.append(f"TTFT {done.ttft_s:.2f}s")
    if done.tokens_per_s:
        parts.append(f"{done.tokens_per_s:.1f} t/s")
    return parts
