"""Blind mode: the panes of a session are "Model A, B, C…" in an order shuffled for that
session, and what would give a model away stays hidden until the person reveals the names.
Per turn they vote for the best reply (or a tie, or all bad); before the reveal they may
guess which pane is the largest model.

This module is the bookkeeping, without the screen: the draw (recorded in the transcript's
header as `{"order": [ids, A first], "seed": S}`, so the same seed gives the same order),
the letters, the `vote`, `guess` and `reveal` events, and the running score of guesses."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# One letter per pane. T and X are the vote dialog's "tie" and "all bad" keys, so panes stop at S.
LETTERS = "ABCDEFGHIJKLMNOPQRS"
TIE, ALL_BAD = "tie", "all_bad"  # a vote's choice when it names no model


def refusal(models: int) -> str | None:
    """Why a session of `models` models cannot be blind ("needs at least two models…"), or None if it can."""
    if models < 2:
        return f"needs at least two models to compare; this session has {models}"
    if models > len(LETTERS):
        return f"takes at most {len(LETTERS)} models (one letter each, A to S); this session has {models}"
    return None


@dataclass
class GuessScore:
    """The "guess the largest" game's score over the blind sessions of this run, counted at each reveal."""

    right: int = 0
    asked: int = 0

    def __str__(self) -> str:
        return f"{self.right}/{self.asked}"


@dataclass
class Blind:
    """One blind session: the panes' order, and what the person has said about them so far."""

    order: list[str]  # model ids as shown, "Model A" first
    seed: int  # the draw's seed: the same seed shuffles the same models the same way
    revealed: bool = False
    votes: dict[int, str] = field(default_factory=dict)  # turn -> the choice voted (a model id, TIE or ALL_BAD)
    guess: str | None = None  # the model id guessed to be the largest, before the reveal

    @classmethod
    def draw(cls, model_ids: list[str], seed: int | None = None) -> Blind:
        """Shuffle `model_ids` (listed in a fixed order, e.g. by size) with `seed`, or a fresh seed."""
        seed = random.randrange(2**31) if seed is None else seed
        order = list(model_ids)
        random.Random(seed).shuffle(order)
        return cls(order, seed)

    def header(self) -> dict[str, Any]:
        return {"order": list(self.order), "seed": self.seed}

    def letter(self, model_id: str) -> str:
        """The model's letter, or "" for a model that is not part of the draw (added after the reveal)."""
        return LETTERS[self.order.index(model_id)] if model_id in self.order else ""

    def label(self, model_id: str) -> str:
        return f"Model {self.letter(model_id)}"

    def panes(self, present: list[str]) -> dict[str, str]:
        """Letter -> model id of the drawn models still in the session (`present`), A first."""
        return {self.letter(model_id): model_id for model_id in self.order if model_id in present}

    # --- events, appended to the transcript ---------------------------------------------------

    def vote(self, turn: int, choice: str, present: list[str]) -> dict[str, Any]:
        """Record a vote on `turn`: a model id, TIE or ALL_BAD. After the reveal it is not blind."""
        self.votes[turn] = choice
        return {
            "type": "vote",
            "turn": turn,
            "choice": choice,
            "blind": not self.revealed,
            "panes": self.panes(present),
        }

    def make_guess(self, turn: int, model_id: str, sizes: dict[str, int]) -> dict[str, Any]:
        """Record the guess that `model_id` is the largest of the models in `sizes` (id -> parameters)."""
        self.guess = model_id
        largest = max(sizes, key=lambda known: sizes[known])
        right = sizes[model_id] == sizes[largest]  # two models of the same size: either is right
        return {"type": "guess", "turn": turn, "model": model_id, "largest": largest, "right": right}

    def reveal(self, turn: int, sizes: dict[str, int], score: GuessScore) -> dict[str, Any]:
        """Show the names from now on; a guess made before counts in `score` now."""
        self.revealed = True
        if self.guess is not None and self.guess in sizes:
            score.asked += 1
            score.right += sizes[self.guess] == max(sizes.values())
        return {"type": "reveal", "turn": turn}


def title_note(blind: Blind | None, score: GuessScore) -> str:
    """What the title line says about blind mode, e.g. " · blind · 2 votes · guessed Model C largest ·
    guesses 1/2 right"; "" when there is nothing to say."""
    parts = []
    if blind is not None:
        parts.append("blind, names shown" if blind.revealed else "blind")
        if blind.votes:
            parts.append(f"{len(blind.votes)} vote{'s' if len(blind.votes) > 1 else ''}")
        if blind.guess is not None and not blind.revealed:
            parts.append(f"guessed {blind.label(blind.guess)} largest")
    if score.asked:
        parts.append(f"guesses {score} right")
    return "".join(f" · {part}" for part in parts)
