"""On a short screen the title, settings and scenario lines fold into one line, so that the
replies get the rows; F12 shows them all until pressed again; a tall screen shows them all."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from chat_app import LADDER, all_answered, chat, loaded, make_app
from scripted import ScriptedModel
from textual.widgets import Static
from textual.widgets._toast import Toast
from waiting import until

from tui import transcript
from tui.app import AppConfig, LadderApp
from tui.cards import Catalog
from tui.scenario import load_scenarios
from tui.screens.sessions import SessionsScreen
from tui.widgets.composer import Composer
from tui.widgets.session_lines import SessionLines

SCENARIO = load_scenarios()[0]["emoji-movie"]
FULL_LINES = ("#title", "#settings-line", "#scenario-line")
REPLY = "These emoji describe *Finding Nemo* (2003): a clownfish father crosses the ocean to find his son. " * 3


class FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime(2026, 11, 28, 10, 15, 3, tzinfo=tz)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> LadderApp:
    monkeypatch.setattr(transcript, "datetime", FixedClock)  # the transcript's name is on screen
    config = AppConfig(
        catalog=Catalog(),
        cards=LADDER,
        lineup="offline",
        sessions_dir=Path("sessions"),
        make_backend=lambda c: ScriptedModel(c, script=lambda request: REPLY),
        engine_info={"schedule": "baton", "cores": 2},
        scenario=SCENARIO,
    )
    return LadderApp(config)


async def ask(pilot) -> None:  # type: ignore[no-untyped-def]
    """A turn answered by every model: the title now names the transcript (two lines at 80 columns)."""
    screen = await loaded(pilot)
    screen.query_one(Composer).cursor_blink = False  # a blinking cursor differs by run
    await pilot.press(*"What movie is this?", "enter")
    await all_answered(pilot, 1)
    await pilot.pause()


def shown(app: LadderApp) -> dict[str, bool]:
    """Which lines above the panes are on screen."""
    lines = chat(app).query_one(SessionLines)
    return {line_id: lines.query_one(line_id).display for line_id in ("#folded-line", *FULL_LINES)}


def folded(app: LadderApp) -> bool:
    return shown(app) == {"#folded-line": True, **dict.fromkeys(FULL_LINES, False)}


def unfolded(app: LadderApp) -> bool:
    return shown(app) == {"#folded-line": False, **dict.fromkeys(FULL_LINES, True)}


def rows_above_panes(app: LadderApp) -> int:
    return chat(app).query_one(SessionLines).outer_size.height


def pane_rows(app: LadderApp) -> int:
    return chat(app).grid.current_pane().outer_size.height  # type: ignore[union-attr]


async def test_at_80x24_the_lines_fold_into_one_and_the_pane_gets_their_rows(app: LadderApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot)
        await until(pilot, lambda: folded(app) and rows_above_panes(app) == 1, what="one folded line")
        # 24 rows: the folded line, the pane switcher, the pane, the composer (3) and the key bar.
        assert pane_rows(app) == 18
        summary = str(chat(app).query_one("#folded-summary", Static).render())
        assert summary == "Ladder · offline · Guess the movie from emoji · saved"


async def test_the_fold_key_shows_every_line_until_pressed_again(app: LadderApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot)
        await until(pilot, lambda: folded(app), what="the folded line")
        await pilot.press("f12")
        # The title (two lines: it names the transcript), the settings, the scenario (two lines).
        await until(pilot, lambda: unfolded(app) and rows_above_panes(app) == 5, what="every line")
        assert pane_rows(app) == 14
        await pilot.press("f12")
        await until(pilot, lambda: folded(app) and pane_rows(app) == 18, what="the lines folded again")


async def test_at_200x50_every_line_shows_and_the_fold_key_says_why(app: LadderApp) -> None:
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await ask(pilot)
        assert unfolded(app) and rows_above_panes(app) == 4  # the scenario's description takes two lines
        await pilot.press("f12")
        said = "they fold into one on screens under 30 rows"
        await until(pilot, lambda: any(said in str(toast.render()) for toast in app.screen.query(Toast)))
        assert unfolded(app) and rows_above_panes(app) == 4


async def test_resizing_to_large_shows_every_line_and_back_to_small_folds_them(app: LadderApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot)
        await until(pilot, lambda: folded(app), what="the folded line")
        await pilot.resize_terminal(200, 50)
        await until(pilot, lambda: unfolded(app), what="every line on a large screen")
        await pilot.resize_terminal(80, 30)  # the smallest screen that is not short
        await until(pilot, lambda: pane_rows(app) < 30, what="the panes laid out again")
        assert unfolded(app) and pane_rows(app) == 20
        await pilot.resize_terminal(80, 29)
        await until(pilot, lambda: folded(app), what="the folded line again")


async def test_a_resize_under_another_screen_is_seen_when_the_chat_screen_returns(app: LadderApp) -> None:
    async with app.run_test(size=(200, 50)) as pilot:
        chat_screen = await loaded(pilot)
        await pilot.press("ctrl+o")  # the sessions screen covers the chat screen while the terminal shrinks
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="the sessions screen")
        await pilot.resize_terminal(80, 24)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is chat_screen and folded(app), what="the folded line")


async def test_when_saving_fails_the_folded_line_says_so_and_the_warning_stays(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the sessions folder should be")
    app, _ = make_app(tmp_path, sessions_dir=blocker / "sessions")
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot)
        lines = chat(app).query_one(SessionLines)
        await until(pilot, lambda: "⚠ not saved" in str(lines.query_one("#folded-summary", Static).render()))
        assert folded(app) and lines.query_one("#saving-line").display  # it says what to do: never folded


# --- snapshots at 80×24 (tests/__snapshots__/test_small_screen/) --------------------------------


def test_folded_snapshot(snap_compare, app: LadderApp) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app, terminal_size=(80, 24), run_before=ask)


def test_unfolded_snapshot(snap_compare, app: LadderApp) -> None:  # type: ignore[no-untyped-def]
    async def ask_then_unfold(pilot) -> None:  # type: ignore[no-untyped-def]
        await ask(pilot)
        await pilot.press("f12")
        await until(pilot, lambda: unfolded(pilot.app), what="every line")

    assert snap_compare(app, terminal_size=(80, 24), run_before=ask_then_unfold)
