"""Screenshots of the main layouts, compared with the saved SVGs in __snapshots__/.
Update them after a deliberate change with `pytest tests/test_snapshots.py --snapshot-update`."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from chat_app import EMOJI_REPLIES, SCREENSHOT_LADDER, FixedClock, ask_the_emoji_question, loaded, screenshot_app
from textual.widgets import DataTable, Input, SelectionList, TabbedContent
from waiting import until

from tui import transcript
from tui.app import LadderApp
from tui.engine.events import TurnRequest
from tui.scenario import load_scenarios
from tui.screens import lab
from tui.screens.lab import LabScreen

REPLIES = {  # the largest model's reply shows a code block too
    **EMOJI_REPLIES,
    "coder-big": "These emoji describe *Finding Nemo* (2003):\n\n```text\nclownfish, blue tang, pufferfish, ocean\n```",
}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> LadderApp:
    monkeypatch.setattr(transcript, "datetime", FixedClock)
    return screenshot_app(lambda model_id, request: REPLIES[model_id])


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_layout(snap_compare, app: LadderApp, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app, terminal_size=size, run_before=ask_the_emoji_question)


# --- the Lab screen after a finished run ---------------------------------------------------------

SCENARIOS, _ = load_scenarios()
FILMS = {item.answer for item in SCENARIOS["emoji-movie-choices"].items}
LAB_LADDER = [replace(c, instruct=False) if c.id == "base" else c for c in SCREENSHOT_LADDER]  # a base model: few-shot


def quiz_reply(model_id: str, request: TurnRequest) -> str:
    """Replies that climb with size: the smallest is always wrong, the base model always says C,
    the 0.5B coder adds but cannot multiply and knows some films, the 1.5B is always right."""
    asked = request.completion if request.completion is not None else request.messages[-1]["content"]
    if model_id == "smol":
        return "I like turtles"
    if sums := re.findall(r"What is (\d+) ([+*]) (\d+)\?", asked):
        a, op, b = sums[-1]  # a few-shot prompt shows solved sums first
        if model_id == "base" or (model_id == "coder" and op == "*"):
            return "1000"
        return str(int(a) + int(b) if op == "+" else int(a) * int(b))
    options = re.findall(r"^([A-E])\. (.+)$", asked, flags=re.MULTILINE)[-5:]
    right = next(letter for letter, film in options if film in FILMS)
    if model_id == "base" or (model_id == "coder" and right != "A"):
        return "C"
    return right


@pytest.fixture
def lab_app(monkeypatch: pytest.MonkeyPatch) -> LadderApp:
    monkeypatch.setattr(lab, "datetime", FixedClock)
    return screenshot_app(quiz_reply, LAB_LADDER, scenarios=SCENARIOS)


async def lab_run(pilot) -> None:  # type: ignore[no-untyped-def]
    await loaded(pilot)
    await pilot.press("ctrl+l")
    await until(pilot, lambda: isinstance(pilot.app.screen, LabScreen), what="the Lab screen")
    screen = pilot.app.screen
    tasks = screen.query_one("#lab-tasks", SelectionList)
    tasks.deselect_all()
    tasks.select("arithmetic")
    tasks.select("emoji-movie-choices")
    items = screen.query_one("#lab-items", Input)
    items.value, items.cursor_blink = "3", False  # a blinking cursor differs by run
    await pilot.click("#lab-start")
    await until(pilot, lambda: screen.runner is None and "Done: 24/24" in str(screen.query_one("#lab-status").render()))
    tabs = screen.query_one(TabbedContent)  # the first task's tab, as the run left it
    assert tabs.active_pane is not None
    tabs.active_pane.query_one(DataTable).focus()
    await pilot.pause()


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
def test_lab_screen(snap_compare, lab_app: LadderApp, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(lab_app, terminal_size=size, run_before=lab_run)
