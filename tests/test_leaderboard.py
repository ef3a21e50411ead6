"""The leaderboard: votes from saved sessions added up to Bradley-Terry ratings with bootstrap
intervals (tui/leaderboard.py), `ladder leaderboard` as a user runs it, and its screen."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from chat_app import all_answered, chat, loaded, make_app
from textual.widgets import DataTable, Static
from waiting import until

from tui.leaderboard import PRIOR_TIES, ModelKey, Vote, leaderboard, log_strengths, rate
from tui.screens.chat import ChatScreen
from tui.screens.leaderboard import LeaderboardScreen
from tui.transcript import TranscriptWriter

# --- synthetic votes from known strengths -------------------------------------------------------

TRUTH = {"m0": 800.0, "m1": 900.0, "m2": 1000.0, "m3": 1100.0, "m4": 1200.0}  # Elo-like, mean 1000
KEYS = {model: ModelKey(model, "") for model in TRUTH}


def synthetic_votes(count: int, panes: int = 2, seed: int = 0) -> list[Vote]:
    """Votes among `panes` random models, the winner drawn with probability proportional to its
    strength (10^(rating/400)): for two panes, exactly Bradley-Terry's odds."""
    rng = random.Random(seed)
    votes = []
    for _ in range(count):
        shown = rng.sample(sorted(TRUTH), panes)
        winner = rng.choices(shown, [10 ** (TRUTH[model] / 400) for model in shown])[0]
        votes.append(Vote(frozenset(KEYS[m] for m in shown), frozenset({KEYS[winner]}), True))
    return votes


def vote(winner: str | None, *shown: str) -> Vote:
    """A vote for `winner` among `shown`; None: a tie among them."""
    keys = frozenset(KEYS.get(m, ModelKey(m, "")) for m in shown)
    return Vote(keys, frozenset() if winner is None else frozenset({ModelKey(winner, "")}), True)


def test_ratings_recover_a_known_ranking_and_intervals_mostly_contain_the_truth() -> None:
    rated = rate(synthetic_votes(800))
    by_rating = sorted(rated, key=lambda key: rated[key][0])
    assert [key.id for key in by_rating] == ["m0", "m1", "m2", "m3", "m4"]
    covered = [key.id for key, (_, low, high) in rated.items() if low <= TRUTH[key.id] <= high]
    assert len(covered) >= 4, f"only {covered} of 5 intervals contain the true rating: {rated}"
    assert all(low < rating < high for rating, low, high in rated.values())
    assert sum(rating for rating, _, _ in rated.values()) / len(rated) == pytest.approx(1000)


def test_votes_among_four_panes_recover_the_order() -> None:
    rated = rate(synthetic_votes(400, panes=4, seed=1))
    assert sorted(rated, key=lambda key: rated[key][0]) == [KEYS[m] for m in sorted(TRUTH)]


def test_the_estimate_solves_the_bradley_terry_likelihood_equations_with_the_prior() -> None:
    """An independent check of what Newton's method converged to: at the maximum, each model's
    score (wins, ties half, and the prior's half tie) equals its expected score."""
    import numpy as np

    wins = np.array([[0, 7, 3.5, 12], [2, 0, 4, 0.5], [1.5, 6, 0, 0], [0, 0.5, 0, 0]], dtype=float)
    theta = log_strengths(wins[None])[0]
    for i in range(4):
        expected = sum(
            (wins[i, j] + wins[j, i]) / (1 + math.exp(theta[j] - theta[i])) for j in range(4) if j != i
        ) + PRIOR_TIES / (1 + math.exp(-theta[i]))
        assert wins[i].sum() + PRIOR_TIES / 2 == pytest.approx(expected, abs=1e-9)


def test_an_unbeaten_model_stays_finite() -> None:
    rated = rate([vote("m4", "m4", other) for other in ["m0", "m1", "m2"] * 50])
    assert all(math.isfinite(value) for values in rated.values() for value in values)
    assert max(rated, key=lambda key: rated[key][0]) == KEYS["m4"]


def test_a_tie_counts_as_half_a_win_each_way() -> None:
    with_ties = rate([vote("m0", "m0", "m1"), vote("m0", "m0", "m1"), vote(None, "m0", "m1"), vote(None, "m0", "m1")])
    as_wins = rate([vote("m0", "m0", "m1")] * 3 + [vote("m1", "m0", "m1")])
    for key in with_ties:
        assert with_ties[key][0] == pytest.approx(as_wins[key][0], abs=1e-9)
    assert with_ties[KEYS["m0"]][0] > with_ties[KEYS["m1"]][0]


def test_only_ties_rate_every_model_level() -> None:
    rated = rate([vote(None, "m0", "m1", "m2")] * 5)
    assert [round(rating, 6) for rating, _, _ in rated.values()] == [1000.0] * 3


def test_the_order_of_the_votes_changes_nothing() -> None:
    votes = synthetic_votes(300, panes=3, seed=2) + [vote(None, "m1", "m2")]
    shuffled = list(votes)
    random.Random(5).shuffle(shuffled)
    assert shuffled != votes
    assert rate(shuffled) == rate(votes)  # ratings and intervals alike, exactly


# --- saved sessions -------------------------------------------------------------------------------

CARDS = {
    "tiny": {"id": "tiny", "name": "Tiny 100M", "params": 100_000_000, "sha256": "a" * 64},
    "mid": {"id": "mid", "name": "Mid 500M", "params": 500_000_000, "sha256": "b" * 64},
    "big": {"id": "big", "name": "Big 1.5B", "params": 1_500_000_000, "sha256": "c" * 64},
}


def save_session(
    folder: Path,
    votes: list[tuple[str, list[str]]],
    *,
    blind: bool = True,
    models: list[dict[str, Any]] | None = None,
    scenario: str | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> Path:
    """A transcript as a blind session writes it: per turn a user turn, every pane's reply, and a
    vote (`choice`: a model id, "tie" or "all_bad") with the panes as lettered on screen."""
    cards = models or list(CARDS.values())
    header = {"lineup": "test", "models": cards, "scenario": {"id": scenario} if scenario else None}
    writer = TranscriptWriter(folder, header, name=scenario or "blind")
    for turn, (choice, panes) in enumerate(votes, start=1):
        writer.write({"type": "user", "turn": turn, "text": f"question {turn}"})
        for model in panes:
            writer.write({"type": "reply", "turn": turn, "model": model, "status": "done", "text": "an answer"})
        letters = dict(zip("ABCDEFG", panes, strict=False))
        writer.write({"type": "vote", "turn": turn, "choice": choice, "blind": blind, "panes": letters})
    for event in extra or []:
        writer.write(event)
    writer.close()
    assert writer.path is not None
    return writer.path


ALL = ["tiny", "mid", "big"]
RANKED = [("big", ALL)] * 6 + [("mid", ALL)] * 3 + [("tiny", ["tiny", "mid"])] + [("mid", ["mid", "tiny"])] * 2


def test_blind_votes_count_by_default_and_all_adds_votes_with_names_shown_and_best_marks(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    save_session(folder, [("big", ["tiny", "big"])])
    save_session(folder, [("tiny", ["tiny", "mid"])], blind=False)  # voted after the reveal
    reviewed = [("tie", ["mid", "big"])]  # and turn 2, answered by two models, marked best in review
    marks = [
        {"type": "user", "turn": 2, "text": "another"},
        *({"type": "reply", "turn": 2, "model": m, "status": "done", "text": "x"} for m in ("tiny", "big")),
        {"type": "mark", "turn": 2, "model": "tiny", "best": True},
        {"type": "mark", "turn": 1, "model": "mid", "best": True},  # turn 1 has a vote: that counts instead
    ]
    save_session(folder, reviewed, blind=False, extra=marks)

    blind = leaderboard(folder)
    assert [s.model.id for s in blind.standings] == ["big", "tiny"]
    assert (len(blind.ballot.votes), blind.ballot.left_out) == (1, 3)
    assert "3 more with names shown or marked in review (--all counts them)" in blind.summary()

    everything = leaderboard(folder, include_all=True)
    assert len(everything.ballot.votes) == 4
    counts = {s.model.id: (s.votes, s.won, s.tied, s.lost) for s in everything.standings}
    assert counts == {"big": (3, 1, 1, 1), "tiny": (3, 2, 0, 1), "mid": (2, 0, 1, 1)}


def test_a_turn_voted_again_counts_its_last_vote(tmp_path: Path) -> None:
    again = {"type": "vote", "turn": 1, "choice": "tiny", "blind": True, "panes": {"A": "big", "B": "tiny"}}
    save_session(tmp_path / "sessions", [("big", ["big", "tiny"])], extra=[again])
    board = leaderboard(tmp_path / "sessions")
    assert [(s.model.id, s.won, s.lost) for s in board.standings] == [("tiny", 1, 0), ("big", 0, 1)]


def test_the_same_id_with_another_file_is_another_model(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    requantised = {**CARDS["tiny"], "sha256": "d" * 64}
    save_session(folder, [("big", ["tiny", "big"])])
    save_session(folder, [("tiny", ["tiny", "big"])], models=[requantised, CARDS["big"]])
    labels = {s.label for s in leaderboard(folder).standings}
    assert labels == {"big", "tiny @aaaaaaaa", "tiny @dddddddd"}


# --- the command, as a user runs it -----------------------------------------------------------------


def ladder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui", "leaderboard", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def table_models(stdout: str) -> list[str]:
    """The model column of the printed table, best first."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("#")) + 2
    return [line.split()[1] for line in lines[start:] if line[:1].isdigit()]


def test_the_command_ranks_the_models_of_saved_sessions(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    save_session(folder, RANKED[:6])
    save_session(folder, RANKED[6:])
    result = ladder("--sessions-dir", str(folder))
    assert result.returncode == 0, result.stderr
    assert table_models(result.stdout) == ["big", "mid", "tiny"]
    assert result.stdout.startswith(f"12 blind votes from 2 of 2 sessions in {folder}")
    big = next(line for line in result.stdout.splitlines() if line.startswith("1 "))
    rating, interval, votes, won, tied, lost = big.split()[3:]
    low, high = (int(x) for x in interval.split("–"))
    assert low <= int(rating) <= high
    assert (votes, won, tied, lost) == ("9", "6", "0", "3")
    assert "Bradley-Terry" in result.stdout and "Traceback" not in result.stderr


def test_the_command_prints_markdown(tmp_path: Path) -> None:
    save_session(tmp_path / "sessions", RANKED)
    result = ladder("--sessions-dir", str(tmp_path / "sessions"), "--markdown")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# Leaderboard"
    assert "| # | model | params | rating | 95% interval | votes | won | tied | lost |" in lines
    rows = [line for line in lines if line.startswith("| 1 ") or line.startswith("| 2 ") or line.startswith("| 3 ")]
    assert [row.split(" | ")[1] for row in rows] == ["big", "mid", "tiny"]
    assert rows[0].split(" | ")[2] == "1.5B"


def test_the_command_filters_by_scenario_and_day(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    save_session(folder, [("tiny", ["tiny", "big"])] * 3, scenario="emoji-movie")
    save_session(folder, [("big", ["tiny", "big"])] * 5)
    emoji = ladder("--sessions-dir", str(folder), "--scenario", "emoji-movie")
    assert table_models(emoji.stdout) == ["tiny", "big"]
    assert "3 blind votes from 1 of 1 sessions of scenario emoji-movie" in emoji.stdout
    assert table_models(ladder("--sessions-dir", str(folder), "--since", str(date.today())).stdout) == ["big", "tiny"]
    tomorrow = str(date.today() + timedelta(days=1))
    later = ladder("--sessions-dir", str(folder), "--since", tomorrow)
    assert (later.returncode, later.stdout) == (0, f"no saved sessions since {tomorrow} in {folder}: nothing to rank\n")


def test_the_command_says_in_one_line_when_there_is_nothing_to_rank(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    empty = ladder("--sessions-dir", str(folder))
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        0,
        f"no saved sessions in {folder}: nothing to rank\n",
        "",
    )
    save_session(folder, [("tiny", ["tiny", "big"])], blind=False)
    unblind = ladder("--sessions-dir", str(folder))
    assert unblind.stdout == (
        f"no blind votes in sessions in {folder} (1 with names shown or marked in review: --all counts them); "
        "vote in a blind session (`ladder --blind`)\n"
    )
    alone = tmp_path / "alone"
    save_session(alone, [("tiny", ["tiny"])], models=[CARDS["tiny"]])
    single = ladder("--sessions-dir", str(alone))
    assert single.returncode == 0 and len(single.stdout.splitlines()) == 1
    assert single.stdout.startswith("1 vote(s) in sessions in") and "a rating compares two or more" in single.stdout
    bad_day = ladder("--sessions-dir", str(folder), "--since", "last week")
    assert (bad_day.returncode, bad_day.stdout) == (2, "")
    assert bad_day.stderr == "ladder: --since wants a date as YYYY-MM-DD, e.g. 2026-11-28, not 'last week'\n"


def test_the_command_notes_a_model_with_only_ties_and_warns_of_an_unreadable_vote(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    broken = {"type": "vote", "turn": 3, "choice": "nobody", "blind": True, "panes": {"A": "big", "B": "mid"}}
    path = save_session(folder, [("big", ["big", "mid"]), ("all_bad", ["tiny", "big"])], extra=[broken])
    result = ladder("--sessions-dir", str(folder))
    assert result.returncode == 0
    assert "note: tiny has only ties (1): its rating says it is level with those it met" in result.stdout
    assert result.stderr == f"ladder: warning: {path.stem}: 1 vote(s) with missing or wrong fields; left out\n"
    assert table_models(result.stdout)[0] == "big"


# --- the screen ------------------------------------------------------------------------------------


def table_rows(screen: LeaderboardScreen) -> list[list[str]]:
    table = screen.query_one("#leaderboard-table", DataTable)
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


async def test_the_screen_from_the_chat_ranks_switches_to_all_votes_and_exports_markdown(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    save_session(folder, RANKED)
    save_session(folder, [("tiny", ["tiny", "big"])] * 4, blind=False)
    app, _ = make_app(tmp_path, sessions_dir=folder)
    async with app.run_test(size=(120, 30)) as pilot:
        chat_screen = await loaded(pilot)
        assert "Leaderboard" in [command.title for command in chat_screen.palette_commands()]
        await pilot.press("ctrl+k")  # with the composer focused, as always in the chat
        await until(pilot, lambda: isinstance(app.screen, LeaderboardScreen), what="the leaderboard")
        screen = app.screen
        assert isinstance(screen, LeaderboardScreen)
        assert [c.title for c in screen.palette_commands()] == ["Back", "Blind only / all votes", "Export Markdown"]
        await until(pilot, lambda: len(table_rows(screen)) == 3, what="the table")
        assert [row[1] for row in table_rows(screen)] == ["big", "mid", "tiny"]
        assert {row[1]: row[6] for row in table_rows(screen)}["tiny"] == "1"
        title = screen.query_one("#leaderboard-title", Static)
        assert "12 blind votes from 1 of 2 sessions" in str(title.render())

        await pilot.press("a")
        await until(pilot, lambda: "16 votes and best marks" in str(title.render()), what="every vote counted")
        won = {row[1]: row[6] for row in table_rows(screen)}
        assert won["tiny"] == "5"  # 1 blind, and the 4 cast with names shown

        await pilot.press("m")
        await until(pilot, lambda: list(folder.glob("leaderboard-*.md")), what="the Markdown file")
        exported = next(folder.glob("leaderboard-*.md"))
        assert "16 votes and best marks" in exported.read_text()
        assert any(f"saved in {exported}" in str(n.message) for n in app._notifications)

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="back in the chat")
        assert chat(app) is chat_screen


async def test_votes_a_blind_chat_session_saves_are_on_its_leaderboard(tmp_path: Path) -> None:
    """The vote events as the app's blind session writes them (tui/blind.py), read back."""
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot)
        session = app.session
        session.start_blind(seed=7)
        assert session.blind is not None
        shown = [model.card.id for model in session.models]
        for turn, choice in enumerate(["big", "big", "mid", "tie"], start=1):
            screen.send_turn(f"question {turn}")
            await all_answered(pilot, turn)
            session.save(session.blind.vote(turn, choice, shown))
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, LeaderboardScreen) and table_rows(app.screen))
        assert isinstance(app.screen, LeaderboardScreen)
        rows = {row[1]: row[5:] for row in table_rows(app.screen)}
        assert rows == {"big": ["4", "2", "1", "1"], "mid": ["4", "1", "1", "2"], "tiny": ["4", "0", "1", "3"]}
        assert [row[1] for row in table_rows(app.screen)] == ["big", "mid", "tiny"]


async def test_the_screen_says_why_when_there_are_no_votes(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, sessions_dir=tmp_path / "sessions")
    async with app.run_test(size=(100, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, LeaderboardScreen))
        title = app.screen.query_one("#leaderboard-title", Static)
        await until(pilot, lambda: "nothing to rank" in str(title.render()), what="the reason")
        assert not app.screen.query_one("#leaderboard-table", DataTable).display


# --- snapshots ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_leaderboard_screen_snapshot(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    save_session(Path("sessions"), RANKED + [("all_bad", ALL)])  # relative: the same text on every run
    app, _ = make_app(tmp_path, sessions_dir=Path("sessions"))

    async def open_leaderboard(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, LeaderboardScreen) and table_rows(app.screen))
        # A DataTable paints its rows a refresh after they are added: once on a busy CI machine the
        # snapshot caught the table before that paint.
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=open_leaderboard)
