"""Neutralise control and escape sequences in model text before it reaches a terminal.

A model can emit ESC, CSI or OSC sequences that would move the cursor, clear the
screen or retitle the terminal. We keep newlines and tabs and replace every other
control character (C0, DEL, C1), the bidirectional marks and overrides and the
Unicode line and paragraph separators with a visible
stand-in, so the text is still readable and nothing is interpreted.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control picture" for it, e.g. ␛ for ESC
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{code:04X}>"


def safe_text(text: str) -> str:
    """Text with every control character but newline and tab made visible and harmless."""
    return _CONTROL.sub(_visible, text)
