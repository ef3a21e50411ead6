"""Finding a search term in one transcript file, fast: `ladder sessions search` and the
sessions screen run it over every transcript, so the raw text is tested first and only the
lines that may match are parsed as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

SNIPPETS = 3  # matches shown per transcript


@dataclass
class Snippet:
    turn: int
    who: str  # "user" or the model id
    text: str  # one line around the match


# A \\u escape that Ladder's writer (json.dumps, ensure_ascii=False) never makes, or an escaped
# slash: a transcript from another writer, whose text may hide the term; parsing tells.
_OTHER_ESCAPES = re.compile(r"\\(?:/|u(?!00[01]))")


class Term:
    """A search term, tested cheaply on a transcript's raw text before any JSON is parsed.

    Case is ignored by Unicode case folding (so STRASSE finds Straße). The cheap test
    looks for the term as json.dumps escapes it in the case-folded file; it may pass on a
    key or metadata, never fails on a real match, and parsing the line then decides.
    """

    def __init__(self, text: str) -> None:
        self.folded = text.casefold()
        # A literal pattern: re's search is about twice as fast as `in` on long texts.
        self.escaped = re.compile(re.escape(json.dumps(self.folded, ensure_ascii=False)[1:-1]))

    def _in(self, folded_raw: str) -> bool:
        return self.escaped.search(folded_raw) is not None or _OTHER_ESCAPES.search(folded_raw) is not None

    def find(self, path: Path) -> list[Snippet]:
        """Up to SNIPPETS matches in the user turns and replies of a transcript, in file order."""
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return []
        folded = text.casefold()  # newlines stay newlines, so lines can be followed in both
        if not self._in(folded):
            return []
        snippets: list[Snippet] = []
        start = folded_start = 0
        # Line by line up to the last newline: after it is nothing, or a line cut off while
        # writing, which readers leave out.
        while (end := text.find("\n", start)) >= 0:
            folded_end = folded.find("\n", folded_start)
            line, folded_line = text[start:end], folded[folded_start:folded_end]
            start, folded_start = end + 1, folded_end + 1
            if not self._in(folded_line):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("type") not in ("user", "reply"):
                continue
            said, turn = event.get("text"), event.get("turn")
            if not isinstance(said, str) or not isinstance(turn, int):
                continue
            at = said.casefold().find(self.folded)
            if at < 0:
                continue
            who = "user" if event["type"] == "user" else str(event.get("model", "?"))
            snippets.append(Snippet(turn, who, _excerpt(said, at, self.folded)))
            if len(snippets) == SNIPPETS:
                break  # enough to show: a common word costs a few lines of each file, not the file
        return snippets


def _excerpt(text: str, folded_at: int, folded_term: str, before: int = 30, width: int = 90) -> str:
    """One line of `text` around the match found at `folded_at` in its case-folded form."""
    begin, end = folded_at, folded_at + len(folded_term)
    if len(text.casefold()) != len(text):
        # Case folding lengthened a character (ß → ss): walk to the offsets in `text`.
        begin, end, folded = len(text), len(text), 0
        for n, char in enumerate(text):
            if folded >= folded_at and begin == len(text):
                begin = n
            if folded >= folded_at + len(folded_term):
                end = n
                break
            folded += len(char.casefold())
    start = max(0, begin - before)
    stop = min(len(text), max(end + 20, start + width))
    if start > 0 and " " in text[start:begin]:
        start = text.index(" ", start, begin) + 1  # start on a whole word
    piece = " ".join(text[start:stop].split())  # one line
    return ("…" if start > 0 else "") + piece + ("…" if stop < len(text) else "")
