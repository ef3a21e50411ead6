"""The leaderboard: the votes in the saved sessions, added up to one rating per model.

A vote for X among N panes counts as X beating each of the other N-1; "tie" and "all bad" count
as ties among all N. With `include_all`, review mode's "best" marks count too, for turns without
a vote (the marked replies beat the others of that turn), and so do votes cast with the names
shown (`"blind": false`). A turn voted on again counts once, as last voted.

Ratings are Bradley-Terry strengths (maximum likelihood, by Newton's method) with a tie counted
as half a win each way, and a weak prior, one virtual tie of every model with a
reference, so that an unbeaten model stays finite. They are shown on an Elo-like scale
(400·log10 of the odds, mean 1000), with 95% intervals from the percentiles of a bootstrap
over the votes (a fixed seed). Votes are summed before they are rated and resampled in a
canonical order, so neither depends on the order the votes were read in.

A model is its card id and file (sha256): the same id with another file is another model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from tui import archive
from tui.history import SessionRecord, load_record
from tui.labels import saved_params_label
from tui.textsafe import safe_text

if TYPE_CHECKING:  # numpy is imported when ratings are computed: the app starts without it
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

RESAMPLES = 1000  # bootstrap resamples for the intervals
SEED = 14  # of the bootstrap: the same votes always give the same intervals
PRIOR_TIES = 1.0  # virtual ties of every model with a reference of strength 1
MEAN_RATING = 1000.0
POINTS_PER_LOG = 400 / math.log(10)  # Elo-like scale: 400 points are 10:1 odds
TOLERANCE = 1e-10  # Newton's method stops when no log-strength moves more than this
MAX_STEPS = 200
FEW_VOTES = 20  # with fewer, the intervals are flagged as too narrow
TIE_CHOICES = ("tie", "all_bad")
COLUMNS: tuple[str, ...] = ("#", "model", "params", "rating", "95% interval", "votes", "won", "tied", "lost")


@dataclass(frozen=True, order=True)
class ModelKey:
    id: str
    sha256: str  # "" when the card has none (a remote model, a file never hashed)


@dataclass(frozen=True)
class Vote:
    """One judgement of one turn. `winners` beat each other pane and tie each other; no winners:
    every pane ties with every other ("tie", "all bad", or every reply marked best)."""

    panes: frozenset[ModelKey]
    winners: frozenset[ModelKey]
    blind: bool

    def outcomes(self) -> Iterator[tuple[ModelKey, ModelKey, float]]:
        """(a, b, a's score against b): 1.0 a win, 0.5 a tie; each pair once, a before b."""
        if not self.winners:
            pairs = sorted(self.panes)
            for n, first in enumerate(pairs):
                for second in pairs[n + 1 :]:
                    yield first, second, 0.5
            return
        winners = sorted(self.winners)
        for n, winner in enumerate(winners):
            for other in winners[n + 1 :]:
                yield winner, other, 0.5
            for loser in sorted(self.panes - self.winners):
                yield winner, loser, 1.0


@dataclass
class Ballot:
    """The votes read from a sessions folder, and what was left out."""

    votes: list[Vote] = field(default_factory=list)
    cards: dict[ModelKey, dict[str, Any]] = field(default_factory=dict)  # as a session saved them
    sessions: int = 0  # sessions read (after the filters)
    sessions_with_votes: int = 0
    left_out: int = 0  # votes with names shown and review marks, not counted without include_all
    single: int = 0  # votes naming fewer than two models: nothing to compare
    problems: list[str] = field(default_factory=list)  # votes that could not be read, one line per session


@dataclass
class Standing:
    model: ModelKey
    label: str  # the card id, with the file's sha256 when the id names several files
    params: str
    rating: float
    low: float  # the 95% interval
    high: float
    votes: int = 0
    won: int = 0
    tied: int = 0
    lost: int = 0


@dataclass
class Leaderboard:
    standings: list[Standing]  # best first
    ballot: Ballot
    directory: Path
    include_all: bool = False
    since: date | None = None
    scenario: str | None = None

    @property
    def counted(self) -> str:
        return "votes and best marks" if self.include_all else "blind votes"

    def where(self) -> str:
        """ " of scenario emoji-movie since 2026-11-28 in sessions": the sessions counted."""
        scenario = f" of scenario {self.scenario}" if self.scenario else ""
        since = f" since {self.since}" if self.since else ""
        return f"{scenario}{since} in {self.directory}"

    def empty_reason(self) -> str | None:
        """One line saying why there is nothing to rank, or None when there is."""
        if self.standings:
            return None
        ballot = self.ballot
        if not ballot.sessions:
            return f"no saved sessions{self.where()}: nothing to rank"
        if ballot.single:
            return (
                f"{ballot.single} vote(s) in sessions{self.where()}, each on a single model: a rating compares "
                "two or more; vote in sessions with two models or more"
            )
        more = f" ({ballot.left_out} with names shown or marked in review: --all counts them)" * bool(ballot.left_out)
        return f"no {self.counted} in sessions{self.where()}{more}; vote in a blind session (`ladder --blind`)"

    def summary(self) -> str:
        """ "12 blind votes from 3 of 5 sessions in DIR", and what was left out."""
        ballot = self.ballot
        line = f"{len(ballot.votes)} {self.counted} from {ballot.sessions_with_votes} of {ballot.sessions} sessions"
        line += self.where()
        if ballot.left_out:
            line += f"; {ballot.left_out} more with names shown or marked in review (--all counts them)"
        return line

    def notes(self) -> list[str]:
        """Lines a reader needs beside the table: models rated on ties alone, too few votes."""
        notes = [
            f"{standing.label} has only ties ({standing.tied}): its rating says it is level with those it met"
            for standing in self.standings
            if standing.tied and not standing.won and not standing.lost
        ]
        notes += [
            f"{standing.label} is unbeaten ({standing.won} won): the prior keeps its rating finite, and its "
            "interval cannot show how much higher it may be"
            for standing in self.standings
            if standing.won and not standing.lost
        ]
        if len(self.ballot.votes) < FEW_VOTES:
            notes.append(
                f"only {len(self.ballot.votes)} vote(s): a bootstrap of so few understates the uncertainty, "
                "so read the intervals as too narrow"
            )
        return notes

    def rows(self) -> list[tuple[str, ...]]:
        """The table, a header row first."""
        return [
            COLUMNS,
            *(
                (
                    str(rank),
                    standing.label,
                    standing.params,
                    f"{standing.rating:.0f}",
                    f"{standing.low:.0f}–{standing.high:.0f}",
                    str(standing.votes),
                    str(standing.won),
                    str(standing.tied),
                    str(standing.lost),
                )
                for rank, standing in enumerate(self.standings, start=1)
            ),
        ]


# --- reading the votes ------------------------------------------------------------------------


def _key(record: SessionRecord, model_id: str) -> ModelKey:
    sha256 = record.model(model_id).get("sha256")
    return ModelKey(model_id, sha256 if isinstance(sha256, str) else "")


def _is_turn(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def session_votes(record: SessionRecord, include_all: bool, ballot: Ballot) -> None:
    """Add the session's votes to `ballot` (and, with `include_all`, its best marks)."""
    votes: dict[int, Vote] = {}  # by turn: the last vote on a turn is the one that counts
    marks: dict[int, dict[str, bool]] = {}  # by turn: model id -> marked best
    unreadable = 0
    for event in record.transcript.events:
        kind, turn = event.get("type"), event.get("turn")
        if kind == "mark" and _is_turn(turn) and isinstance(event.get("model"), str):
            marks.setdefault(turn, {})[event["model"]] = bool(event.get("best", True))
        if kind != "vote":
            continue
        panes, choice = event.get("panes"), event.get("choice")
        shown = list(panes.values()) if isinstance(panes, dict) else None
        if (
            not _is_turn(turn)
            or shown is None
            or not all(isinstance(model, str) for model in shown)
            or (choice not in TIE_CHOICES and choice not in shown)
        ):
            unreadable += 1
            continue
        keys = frozenset(_key(record, model) for model in shown)
        winners = frozenset() if choice in TIE_CHOICES else frozenset({_key(record, str(choice))})
        votes[turn] = Vote(keys, winners, event.get("blind") is True)
    for turn, marked in marks.items():
        if turn in votes:
            continue  # a turn voted on counts its vote, not its marks as well
        answered = next((t.replies for t in record.turns if t.number == turn), {})
        best = {model for model, is_best in marked.items() if is_best and model in answered}
        if best:
            panes = frozenset(_key(record, model) for model in answered)
            winners = frozenset(_key(record, model) for model in best)
            votes[turn] = Vote(panes, frozenset() if winners == panes else winners, False)
    counted = 0
    for vote in votes.values():
        if not vote.blind and not include_all:
            ballot.left_out += 1
        elif len(vote.panes) < 2:
            ballot.single += 1
        else:
            ballot.votes.append(vote)
            counted += 1
            for key in vote.panes:
                ballot.cards.setdefault(key, record.model(key.id))
    ballot.sessions_with_votes += counted > 0
    if unreadable:
        ballot.problems.append(f"{record.id}: {unreadable} vote(s) with missing or wrong fields; left out")


def read_votes(
    directory: Path, *, since: date | None = None, scenario: str | None = None, include_all: bool = False
) -> Ballot:
    """The votes of every session in the folder created on or after `since`, in `scenario`."""
    ballot = Ballot()
    for summary in archive.list_sessions(directory):
        if (since and summary.created_at.date() < since) or (scenario and summary.scenario != scenario):
            continue
        ballot.sessions += 1
        session_votes(load_record(summary.path), include_all, ballot)
    return ballot


# --- rating -------------------------------------------------------------------------------------


def log_strengths(wins: Array) -> Array:
    """Bradley-Terry log-strengths for each of B sets of results at once: `wins[b, i, j]` is
    how often i beat j (ties half each way). Every model also has PRIOR_TIES virtual ties with
    a reference of log-strength 0. Newton's method on the log-likelihood, which the prior makes
    strictly concave; a step is shortened to move no strength more than e-fold, so that a
    lopsided record cannot overshoot."""
    import numpy as np

    games = wins + wins.transpose(0, 2, 1)
    scores = wins.sum(axis=2) + PRIOR_TIES / 2
    theta = np.zeros(wins.shape[:2])
    for _ in range(MAX_STEPS):
        beats = 1 / (1 + np.exp(theta[:, None, :] - theta[:, :, None]))  # P(i beats j)
        beats_reference = 1 / (1 + np.exp(-theta))
        gradient = scores - (games * beats).sum(axis=2) - PRIOR_TIES * beats_reference
        hessian = games * beats * (1 - beats)  # off the diagonal; on it, minus each row's sum and the prior's
        diagonal = np.arange(wins.shape[1])
        hessian[:, diagonal, diagonal] -= hessian.sum(axis=2) + PRIOR_TIES * beats_reference * (1 - beats_reference)
        step = -np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        largest = np.abs(step).max(axis=1, keepdims=True)
        theta = theta + step / np.maximum(largest, 1.0)
        if float(largest.max()) < TOLERANCE:
            break
    return theta


def ratings(wins: Array) -> Array:
    """Strengths on the Elo-like scale, each set's mean at MEAN_RATING."""
    points: Array = POINTS_PER_LOG * log_strengths(wins)
    centred: Array = points - points.mean(axis=1, keepdims=True) + MEAN_RATING
    return centred


def rate(votes: list[Vote], resamples: int = RESAMPLES, seed: int = SEED) -> dict[ModelKey, tuple[float, float, float]]:
    """Each model's rating and 95% interval: {model: (rating, low, high)}."""
    import numpy as np

    models = sorted({key for vote in votes for key in vote.panes})
    index = {key: n for n, key in enumerate(models)}
    # Votes with the same outcomes are one kind; kinds in a canonical order, so that the
    # bootstrap draws the same resamples whatever order the votes came in.
    kinds = Counter(tuple(sorted((index[a], index[b], score) for a, b, score in vote.outcomes())) for vote in votes)
    ordered = sorted(kinds)
    results = np.zeros((len(ordered), len(models), len(models)))
    for n, outcomes in enumerate(ordered):
        for a, b, score in outcomes:
            results[n, a, b] += score
            results[n, b, a] += 1 - score
    counts = np.array([kinds[kind] for kind in ordered], dtype=float)
    point = ratings(np.einsum("k,kij->ij", counts, results)[None])[0]
    draws = np.random.default_rng(seed).multinomial(len(votes), counts / counts.sum(), size=resamples)
    resampled = ratings(np.einsum("bk,kij->bij", draws.astype(float), results))
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    return {key: (float(point[n]), float(low[n]), float(high[n])) for key, n in index.items()}


def _labels(models: list[ModelKey]) -> dict[ModelKey, str]:
    """Card ids; an id that names more than one file gets the start of each file's sha256."""
    ids = Counter(key.id for key in models)
    labels = {key: key.id if ids[key.id] == 1 else f"{key.id} @{key.sha256[:8] or 'no-sha256'}" for key in models}
    return {key: " ".join(safe_text(label).split()) for key, label in labels.items()}  # one line, shown safely


def leaderboard(
    directory: Path, *, since: date | None = None, scenario: str | None = None, include_all: bool = False
) -> Leaderboard:
    ballot = read_votes(directory, since=since, scenario=scenario, include_all=include_all)
    board = Leaderboard([], ballot, directory, include_all, since, scenario)
    if not ballot.votes:
        return board
    rated = rate(ballot.votes)
    labels = _labels(list(rated))
    for key, (rating, low, high) in rated.items():
        board.standings.append(
            Standing(key, labels[key], saved_params_label(ballot.cards[key].get("params")), rating, low, high)
        )
    by_key = {standing.model: standing for standing in board.standings}
    for vote in ballot.votes:
        for key in vote.panes:
            standing = by_key[key]
            standing.votes += 1
            if not vote.winners:
                standing.tied += 1
            elif key in vote.winners:
                standing.won += 1
            else:
                standing.lost += 1
    board.standings.sort(key=lambda s: (-s.rating, s.label))
    return board


# --- Markdown -----------------------------------------------------------------------------------


def method() -> str:
    """How the ratings were made, in a few words under the table."""
    return (
        f"Bradley-Terry ratings, ties half a win each way, on an Elo-like scale (400 points: 10:1 odds; mean "
        f"{MEAN_RATING:.0f}); 95% intervals from {RESAMPLES} bootstrap resamples of the votes (seed {SEED}).\n"
        'A vote for one pane beats each other pane; "tie" and "all bad" tie them all.'
    )


def markdown(board: Leaderboard) -> str:
    """The leaderboard as a Markdown section: a line on what was counted, the table, the method."""
    reason = board.empty_reason()
    if reason:
        return f"# Leaderboard\n\n{reason}\n"
    rows = board.rows()

    def cells(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    align = ["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]
    lines = ["# Leaderboard", "", board.summary() + ".", "", cells(rows[0]), "|" + "|".join(align) + "|"]
    lines += [cells(row) for row in rows[1:]]
    lines += ["", *(f"- {note}" for note in board.notes())] if board.notes() else []
    lines += ["", method()]
    return "\n".join(lines) + "\n"
