"""Model text reaching the terminal: control and escape sequences are made visible and harmless."""

from __future__ import annotations

import pytest

from tui.textsafe import safe_text

HOSTILE = {
    "CSI clear screen": ("\x1b[2J\x1b[H", "\u241b[2J\u241b[H"),
    "OSC set title": ("\x1b]0;pwned\x07", "\u241b]0;pwned\u2407"),
    "OSC 8 hyperlink": ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "\u241b]8;;http://x\u241b\\link\u241b]8;;\u241b\\"),
    "BEL": ("ding\x07", "ding\u2407"),
    "carriage return": ("safe\rrm -rf", "safe\u240drm -rf"),
    "backspace": ("ab\x08\x08cd", "ab\u2408\u2408cd"),
    "NUL and vertical tab": ("a\x00b\x0bc\x0cd", "a\u2400b\u240bc\u240cd"),
    "C1 CSI": ("\x9b31m red", "<U+009B>31m red"),
    "C1 range ends": ("\x80\x9f", "<U+0080><U+009F>"),
    "DEL": ("x\x7fy", "x\u2421y"),
    "bidi override": ("abc\u202edcba\u202c", "abc<U+202E>dcba<U+202C>"),
    "bidi isolates": ("\u2066x\u2067y\u2068z\u2069", "<U+2066>x<U+2067>y<U+2068>z<U+2069>"),
}


def is_harmless(text: str) -> bool:
    for char in text:
        code = ord(char)
        if code < 0x20 and char not in "\n\t":
            return False
        if 0x7F <= code <= 0x9F or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            return False
    return True


@pytest.mark.parametrize(("raw", "shown"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_is_neutralised(raw: str, shown: str) -> None:
    """Every control character but newline and tab is replaced by a visible stand-in."""
    assert not is_harmless(raw)
    assert safe_text(raw) == shown
    assert is_harmless(safe_text(raw))


def test_every_dangerous_code_point_is_made_visible() -> None:
    """No C0 (but \\n, \\t), DEL, C1 or bidi control survives, each replaced by something visible."""
    dangerous = [
        chr(c)
        for c in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
        if chr(c) not in "\n\t"
    ]
    for char in dangerous:
        shown = safe_text(f"a{char}b")
        assert is_harmless(shown) and shown.startswith("a") and shown.endswith("b") and len(shown) > 2, repr(char)


def test_ordinary_text_unchanged() -> None:
    """Text, emoji (with joiners and variation selectors), CJK, newlines and tabs pass as they are."""
    text = "Hello 👋🏽 family: 👨‍👩‍👧 ☀️\n\t中文，日本語のテキスト、한국어\nnaïve café — “quotes” ∑ x² \u00a0end\n"
    assert safe_text(text) == text
    assert safe_text("") == ""
