"""Screenshots of the main layouts, compared with the saved SVGs in __snapshots__/.
Update them after a deliberate change with `pytest tests/test_snapshots.py --snapshot-update`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from chat_app import all_answered, loaded
from scripted import ScriptedModel, card

from tui import transcript
from tui.app import AppConfig, LadderApp
from tui.cards import Catalog
from tui.widgets.composer import Composer

LADDER = [
    card("smol", 135_000_000, "Smol 135M"),
    card("base", 270_000_000, "Base 270M"),
    card("coder", 500_000_000, "Coder 0.5B"),
    card("coder-big", 1_500_000_000, "Coder 1.5B"),
]
REPLIES = {
    "smol": "🐠🐟🐡🌊 🐠🐟🐡🌊 🐠🐟🐡🌊",
    "base": "What movie do these emoji describe? The ocean.",
    "coder": "These emoji describe **the ocean**.",
    "coder-big": "These emoji describe *Finding Nemo* (2003):\n\n```text\nclownfish, blue tang, pufferfish, ocean\n```",
}


class FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime(2026, 11, 28, 10, 15, 3, tzinfo=tz)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> LadderApp:
    monkeypatch.setattr(transcript, "datetime", FixedClock)
    config = AppConfig(
        catalog=Catalog(),
        cards=LADDER,
        lineup="offline",
        sessions_dir=Path("sessions"),
        make_backend=lambda c: ScriptedModel(c, script=lambda request: REPLIES[c.id]),
        engine_info={"schedule": "baton", "cores": 2},
    )
    return LadderApp(config)


async def ask(pilot) -> None:  # type: ignore[no-untyped-def]
    screen = await loaded(pilot)
    screen.query_one("#composer", Composer).cursor_blink = False  # a blinking cursor differs by run
    await pilot.press(*"What movie do these emoji describe?", "enter")
    await all_answered(pilot, 1)
    await pilot.pause()  # the last replies drawn (the screenshot is taken after one more)


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_layout(snap_compare, app: LadderApp, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app, terminal_size=size, run_before=ask)
