"""Word-level differences between two replies, for the diff view.

Words are compared as written: case and punctuation count ("Nemo." is not "Nemo"). Each
word keeps the whitespace that follows it, so the text shown reads as the model wrote it
(line breaks, indented code), while a change of spacing alone is no difference. Whitespace
before the first word is dropped, as the panes drop it.

difflib's SequenceMatcher runs twice. First with autojunk on, which is fast: a word that
makes up more than 1% of a text of 200 words or more ("the", "a", "-") cannot anchor a match,
so the long runs both texts share are found quickly. Then each stretch where they differ is
compared again with autojunk off, so the common words they share there count too. Autojunk
off throughout finds about as much (within 1% of the words) but takes 2 to 5 times as long on
replies of 3,000 words and 10 times as long on 10,000 (the README has the timings). A stretch
too large for the second pass (unrelated replies of thousands of words) is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

WORD = re.compile(r"(\S+)(\s*)")
SECOND_PASS_LIMIT = 4_000_000  # words × words of a differing stretch: about 0.1 s of the second pass


@dataclass(frozen=True)
class Segment:
    """A run of words both texts share (equal), only the first has (delete) or only the second has (insert)."""

    kind: Literal["equal", "delete", "insert"]
    a: str  # the words as the first text writes them, each with the whitespace after it; "" in an insert
    b: str  # the same for the second text; "" in a delete


@dataclass(frozen=True)
class WordDiff:
    segments: list[Segment]  # in reading order; where the texts differ, a delete comes before its insert
    words_a: int
    words_b: int
    same: int  # words the two texts share, in order
    # The number (from 1) of the first text's word where the texts part: one past its last word
    # if the second only goes on further; None if they do not part.
    first_difference: int | None

    @property
    def identical(self) -> bool:
        return all(segment.kind == "equal" for segment in self.segments)

    @property
    def ratio(self) -> float:
        """The share of words the texts have in common: 2 × shared / (words in both), 1.0 for two empty texts."""
        total = self.words_a + self.words_b
        return 2 * self.same / total if total else 1.0


def words(text: str) -> list[tuple[str, str]]:
    """The words of `text`, each with the whitespace that follows it."""
    return WORD.findall(text)


def opcodes(a: list[str], b: list[str]) -> Iterator[tuple[str, int, int, int, int]]:
    """SequenceMatcher's opcodes for turning `a` into `b`, in two passes (see above)."""
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=True).get_opcodes():
        if op != "replace" or (i2 - i1) * (j2 - j1) > SECOND_PASS_LIMIT:
            yield op, i1, i2, j1, j2
            continue
        for op2, k1, k2, l1, l2 in SequenceMatcher(None, a[i1:i2], b[j1:j2], autojunk=False).get_opcodes():
            yield op2, i1 + k1, i1 + k2, j1 + l1, j1 + l2


def diff_words(a: str, b: str) -> WordDiff:
    """The word-level differences that turn `a` into `b`."""
    words_a, words_b = words(a), words(b)

    def joined(part: list[tuple[str, str]]) -> str:
        return "".join(word + space for word, space in part)

    segments: list[Segment] = []
    same, first_difference = 0, None
    for op, i1, i2, j1, j2 in opcodes([w for w, _ in words_a], [w for w, _ in words_b]):
        if op == "equal":
            same += i2 - i1
            # The second pass may find shared words right after those the first pass found: one segment.
            before = segments.pop() if segments and segments[-1].kind == "equal" else Segment("equal", "", "")
            segments.append(Segment("equal", before.a + joined(words_a[i1:i2]), before.b + joined(words_b[j1:j2])))
            continue
        first_difference = first_difference or i1 + 1
        if i2 > i1:  # "delete" or the first half of "replace"
            segments.append(Segment("delete", joined(words_a[i1:i2]), ""))
        if j2 > j1:
            segments.append(Segment("insert", "", joined(words_b[j1:j2])))
    return WordDiff(segments, len(words_a), len(words_b), same, first_difference)
