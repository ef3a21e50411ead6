"""Driving the chat app in tests: an app on scripted models, and waiting, as a person would,
until the models have loaded or the replies to a turn are on screen (never for a fixed time)."""

from __future__ import annotations

import json
from pathlib import Path

from scripted import ScriptedModel, card
from waiting import until

from tui.app import AppConfig, LadderApp
from tui.cards import Catalog, ModelCard
from tui.screens.chat import ChatScreen
from tui.widgets.pane import ModelPane

LADDER = [
    card("big", 1_500_000_000, "Big 1.5B"),
    card("tiny", 100_000_000, "Tiny 100M"),
    card("mid", 500_000_000, "Mid 500M"),
]


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
