"""What the screens ask of the app. The app owns the session and switching to another, so
the sessions and review screens do not resume or replay a saved session themselves: they
post one of these messages, which bubbles up to `LadderApp`."""

from __future__ import annotations

from textual.message import Message
from textual.screen import Screen

from tui.cards import Catalog, ModelCard
from tui.history import SessionRecord
from tui.screens.models import ModelsScreen


class ResumeRequested(Message):
    """Continue a saved session: its models, history and transcript file."""

    def __init__(self, record: SessionRecord) -> None:
        super().__init__()
        self.record = record


class ReplayRequested(Message):
    """Send a saved session's user turns again, in order, to `cards`, beside the saved replies."""

    def __init__(self, record: SessionRecord, cards: list[ModelCard]) -> None:
        super().__init__()
        self.record = record
        self.cards = cards


def choose_replay(screen: Screen[None], record: SessionRecord, catalog: Catalog, current: list[ModelCard]) -> None:
    """Ask which models to replay `record` to (the `current` ones ticked), then request the replay."""

    def chosen(cards: list[ModelCard] | None) -> None:
        if cards:
            screen.post_message(ReplayRequested(record, cards))

    screen.app.push_screen(ModelsScreen(catalog, current, title=f"Replay {record.id} to"), chosen)
