"""Driving the chat app in tests: an app on scripted models, and waiting, as a person would,
until the models have loaded or the replies to a turn are on screen (never for a fixed time);
the same for screenshots, on a stopped clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from scripted import ScriptedModel, card
from textual.screen import Screen
from waiting import until

from tui.app import AppConfig, LadderApp
from tui.cards import Catalog, ModelCard
from tui.engine.events import TurnRequest
from tui.screens.chat import ChatScreen
from tui.screens.settings import SettingsScreen
from tui.widgets.composer import Composer
from tui.widgets.pane import ModelPane

ScreenT = TypeVar("ScreenT", bound=Screen[Any])

LADDER = [
    card("big", 1_500_000_000, "Big 1.5B"),
    card("tiny", 100_000_000, "Tiny 100M"),
    card("mid", 500_000_000, "Mid 500M"),
]


def scripted_app(
    tmp_path: Path, cards: list[ModelCard], make_backend: Callable[[ModelCard], ScriptedModel]
) -> LadderApp:
    """The chat app on the scripted models `make_backend` makes, its sessions in `tmp_path`."""
    config = AppConfig(
        catalog=Catalog(cards={c.id: c for c in cards}),
        cards=cards,
        make_backend=make_backend,
        sessions_dir=tmp_path / "sessions",
        lineup="scripted",
    )
    return LadderApp(config)


def make_app(
    tmp_path: Path,
    *,
    delay: float = 0.0,
    failing: str | None = None,
    cards: list[ModelCard] = LADDER,
    sessions_dir: Path | None = None,
) -> tuple[LadderApp, dict[str, ScriptedModel]]:
    models: dict[str, ScriptedModel] = {}

    def make_backend(c):  # type: ignore[no-untyped-def]
        models[c.id] = ScriptedModel(c, delay=delay, load_error="the file is damaged" if c.id == failing else None)
        return models[c.id]

    config = AppConfig(
        catalog=Catalog(cards={c.id: c for c in cards}),
        cards=cards,
        make_backend=make_backend,
        sessions_dir=sessions_dir or tmp_path / "sessions",
        lineup="scripted",
    )
    return LadderApp(config), models


def chat(app: LadderApp) -> ChatScreen:
    assert isinstance(app.screen, ChatScreen)
    return app.screen


def answered(pane: ModelPane, turn: int) -> bool:
    """Whether the pane shows its model's whole reply to `turn` (done, cancelled or failed)."""
    view = pane.turn_view(turn)
    return view is not None and pane.reply_view is view and pane.state in ("done", "cancelled", "error")


async def loaded(pilot, timeout: float = 10.0) -> ChatScreen:  # type: ignore[no-untyped-def]
    """Wait until the chat screen shows a pane for every model, each loaded or failed."""
    app = pilot.app

    def ready() -> bool:
        screen = app.screen
        return (
            isinstance(screen, ChatScreen)
            and len(screen.panes) >= len(app.session.models)
            and all(pane.state not in ("waiting", "fetching", "loading") for pane in screen.panes.values())
        )

    await until(pilot, ready, timeout, what="every model loaded")
    return chat(app)


async def all_answered(pilot, turn: int, panes: list[ModelPane] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Wait until every live pane (or those given) shows its reply to `turn`."""
    panes = panes or [pane for pane in chat(pilot.app).panes.values() if not pane.original]
    await until(pilot, lambda: all(answered(pane, turn) for pane in panes), what=f"the replies to turn {turn}")


def errors_in(pane: ModelPane) -> str:
    """What a pane says went wrong, for a failed assertion's message."""
    return " | ".join(str(error.render()) for error in pane.query(".error"))


def reply_text(pane: ModelPane, turn: int) -> str:
    view = pane.turn_view(turn)
    return view.reply.source if view else ""


def transcript_events(app: LadderApp) -> list[dict]:  # type: ignore[type-arg]
    path = app.session.transcript.path
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()]


async def send(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.click("#composer")
    for char in text:
        await pilot.press(char if char != " " else "space")
    await pilot.press("enter")


async def send_and_wait(pilot, text: str, turn: int) -> None:  # type: ignore[no-untyped-def]
    """Send `text`, user turn number `turn`, and wait until every live pane shows its reply."""
    await send(pilot, text)
    await all_answered(pilot, turn)


async def open_settings(pilot) -> SettingsScreen:  # type: ignore[no-untyped-def]
    """Press F2 and wait for the Settings dialog."""
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen), what="the settings dialog")
    screen = pilot.app.screen
    assert isinstance(screen, SettingsScreen)
    return screen


async def save_settings(pilot) -> None:  # type: ignore[no-untyped-def]
    """Press Ctrl+S in the Settings dialog and wait for the chat screen again."""
    await pilot.press("ctrl+s")
    await until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen), what="the dialog closed")


# --- screenshots -------------------------------------------------------------------------------------

SCREENSHOT_LADDER = [
    card("smol", 135_000_000, "Smol 135M"),
    card("base", 270_000_000, "Base 270M"),
    card("coder", 500_000_000, "Coder 0.5B"),
    card("coder-big", 1_500_000_000, "Coder 1.5B"),
]
EMOJI_REPLIES = {  # to "What movie do these emoji describe?", better as the models grow
    "smol": "🐠🐟🐡🌊 🐠🐟🐡🌊 🐠🐟🐡🌊",
    "base": "What movie do these emoji describe? The ocean.",
    "coder": "These emoji describe **the ocean**.",
    "coder-big": "These emoji describe *Finding Nemo* (2003).",
}


class FixedClock(datetime):
    """A stopped clock, for a module's `datetime`: the times and file names a screenshot shows are the same each run."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime(2026, 11, 28, 10, 15, 3, tzinfo=tz)


def screenshot_app(
    reply: Callable[[str, TurnRequest], str] = lambda model_id, request: EMOJI_REPLIES[model_id],
    cards: list[ModelCard] = SCREENSHOT_LADDER,
    **config: Any,
) -> LadderApp:
    """The app for a screenshot: scripted models, each answering `reply(its id, the request)`
    (default: its EMOJI_REPLIES), on a two-core "baton" engine; `config` sets more of AppConfig."""
    return LadderApp(
        AppConfig(
            catalog=Catalog(),
            cards=cards,
            lineup="offline",
            sessions_dir=Path("sessions"),
            make_backend=lambda c: ScriptedModel(c, script=lambda request: reply(c.id, request)),
            engine_info={"schedule": "baton", "cores": 2},
            **config,
        )
    )


async def ask_the_emoji_question(pilot) -> None:  # type: ignore[no-untyped-def]
    """Once the models have loaded, ask which film some emoji describe and wait until every reply is drawn."""
    screen = await loaded(pilot)
    screen.query_one("#composer", Composer).cursor_blink = False  # a blinking cursor differs by run
    await pilot.press(*"What movie do these emoji describe?", "enter")
    await all_answered(pilot, 1)
    await pilot.pause()  # the last replies drawn (the screenshot is taken after one more)


async def open_screen(pilot: Any, key: str, kind: type[ScreenT], what: str) -> ScreenT:
    """Press `key` and wait for a screen of `kind` to open."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, kind), what=what)
    screen = pilot.app.screen
    assert isinstance(screen, kind)
    return screen
