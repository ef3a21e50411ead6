"""Streamed text shown at the pace it arrives, a few characters at a time.

A model writes a token every 100 to 250 ms when four share two cores, and in bursts (a few
tokens, then a pause while the others have the cores), so a pane that shows each token as
it comes changes 4 to 10 times a second, in jumps. `Pacer` holds the text that came and lets
out a share of what it holds at every screen update (10 a second), at least a character: the
pane shows a little more each time, the same text in the same order, never ahead of the
model. What it holds settles at about `LAG_S` seconds of the model's writing, and a pause
drains it slowly rather than at once. When the reply ends, whatever is held is shown at once.
"""

from __future__ import annotations

import unicodedata

LAG_S = 0.5  # a screen update lets out this share of a second's worth of what is held: about the delay
JOINERS = {"\u200d", "\ufe0e", "\ufe0f"}  # a zero-width joiner and variation selectors: part of the character before


class Pacer:
    def __init__(self) -> None:
        self.held = ""
        self.shown_any = False
        self.last_take = 0.0
        self.owed = 0.0  # a fraction of a character, carried to the next take

    def add(self, text: str) -> None:
        self.held += text

    def take(self, now: float) -> str:
        """The held text to show now."""
        since, self.last_take = self.last_take, now
        if not self.held:
            return ""
        if not self.shown_any:  # the reply's first text is shown as it comes: its time to first token is real
            self.shown_any = True
            return self.take_all()
        self.owed += len(self.held) * min(1.0, (now - since) / LAG_S)
        count = max(1, int(self.owed))
        self.owed = max(0.0, self.owed - count)
        return self.cut(count)

    def take_all(self) -> str:
        held, self.held, self.owed = self.held, "", 0.0
        return held

    def cut(self, count: int) -> str:
        """The first `count` characters of the held text, or a few more so as not to split a
        character from its accents or an emoji from what joins it."""
        held = self.held
        end = min(count, len(held))
        while end < len(held) and (joined(held[end]) or held[end - 1] == "\u200d"):
            end += 1
        self.held = held[end:]
        return held[:end]


def joined(char: str) -> bool:
    """Whether `char` belongs with the character before it: an accent, a joiner, a variation selector
    or an emoji's skin tone."""
    return char in JOINERS or bool(unicodedata.combining(char)) or "\U0001f3fb" <= char <= "\U0001f3ff"
