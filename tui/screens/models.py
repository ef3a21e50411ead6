"""Choose the models of the session: tick cards, start from a lineup, or name a GGUF file.
A model added mid-session sees the conversation so far before its first turn."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, SelectionList, Static

from tui.cards import Catalog, ModelCard, card_from_gguf
from tui.gguf import GGUFError
from tui.labels import params_label, size_label
from tui.store import find_local
from tui.textsafe import safe_text


class ModelsScreen(ModalScreen[list[ModelCard] | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, catalog: Catalog, current: list[ModelCard], title: str = "Models") -> None:
        super().__init__()
        self.cards = dict(catalog.cards)
        for card in current:  # cards from files, or changed by options, as loaded
            self.cards[card.id] = card
        self.catalog = catalog
        self.chosen = {card.id for card in current}
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            # Text, not markup: the title can name a saved session, and model names come from files.
            yield Label(
                Text.assemble(
                    (safe_text(self.title_text), "bold"), " · models load in the background; removed ones are closed"
                )
            )
            yield Label("Start from a lineup", classes="field-label")
            yield Select(
                [
                    (Text(safe_text(f"{lineup.name} ({len(lineup.models)} models)")), lineup.name)
                    for lineup in self.catalog.lineups.values()
                ],
                prompt="keep the current models",
                id="lineup",
            )
            yield Label("Models (space ticks)", classes="field-label")
            yield SelectionList[str](id="cards")
            yield Label("Or add a GGUF file", classes="field-label")
            yield Input(placeholder="/path/to/model.gguf", id="path")
            yield Static("", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Apply", id="apply", variant="primary")

    def on_mount(self) -> None:
        self.fill()

    def fill(self) -> None:
        cards = self.query_one("#cards", SelectionList)
        cards.clear_options()
        for card in sorted(self.cards.values(), key=lambda c: (c.order, c.id)):
            where = (
                f"on {card.endpoint.host}" if card.endpoint else "here" if find_local(card) else card.sources[0].kind
            )
            label = f"{params_label(card.params):>5}  {card.name}  ({card.quant}, {size_label(card.size)}, {where})"
            cards.add_option((Text(safe_text(label)), card.id, card.id in self.chosen))
        cards.styles.height = min(len(self.cards) + 2, 14)

    @on(Select.Changed, "#lineup")
    def pick_lineup(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.chosen = set(self.catalog.lineups[event.value].models)
            self.fill()

    @on(SelectionList.SelectedChanged)
    def remember(self, event: SelectionList.SelectedChanged[str]) -> None:
        self.chosen = set(event.selection_list.selected)

    @on(Button.Pressed, "#apply")
    def apply(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if path:
            try:
                card = card_from_gguf(Path(path).expanduser().resolve())
            except GGUFError as error:
                self.query_one(".problem", Static).update(Text(safe_text(str(error))))
                return
            self.cards[card.id] = card
            self.chosen.add(card.id)
        if not self.chosen:
            self.query_one(".problem", Static).update("Choose at least one model")
            return
        self.dismiss([self.cards[card_id] for card_id in self.chosen])

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
