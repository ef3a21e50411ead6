"""Settings: the system prompt, sampling parameters shared by all models or set for one
model, and what is recorded with each reply (token probabilities). The dialog returns the
new settings (`dismiss`); the chat screen applies them to the session, from the next turn,
and they are recorded in the transcript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, TextArea

from tui.cards import ModelCard
from tui.engine.events import PARAM_NAMES, SamplingParams
from tui.textsafe import safe_text

SHARED = "*"


@dataclass(frozen=True)
class Settings:
    params: SamplingParams  # shared by all models
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # model id -> its own values
    system: str = ""
    few_shot: bool = True  # base models answer a scenario's items few-shot
    logprobs: bool = False  # record each token's probability and its likeliest alternatives


class SettingsScreen(ModalScreen[Settings | None]):
    """Edits `current` for the models of `cards`; returns the new settings, or None if cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, current: Settings, cards: list[ModelCard]) -> None:
        super().__init__()
        self.current = current
        self.cards = cards
        self.shared: dict[str, Any] = current.params.as_dict()
        self.overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in current.model_params.items()}
        self.scope = SHARED

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog"):  # scrolls on a short screen (80x24), to Save
            yield Label("[b]Settings[/b] · they apply from the next turn and are saved in the transcript")
            yield Label("System prompt", classes="field-label")
            yield TextArea(self.current.system, id="system", soft_wrap=True)
            yield Label("Sampling parameters for", classes="field-label")
            # Text, not markup: model names come from GGUF files and model cards.
            choices = [("all models (shared)", SHARED)] + [(Text(safe_text(card.name)), card.id) for card in self.cards]
            yield Select(choices, value=SHARED, allow_blank=False, id="scope")
            with Grid(id="params"):
                for name in PARAM_NAMES:
                    yield Label(name.replace("_", " "))
                    yield Input(id=f"param-{name}")
            yield Checkbox(
                "Base models answer a scenario's items few-shot (Q: … A: with solved examples), as in the lab",
                self.current.few_shot,
                id="few-shot",
            )
            yield Checkbox(
                "Record token probabilities (Ctrl+T shows them; a little slower)", self.current.logprobs, id="logprobs"
            )
            yield Static("", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def on_mount(self) -> None:
        grid = self.query_one("#params", Grid)
        grid.styles.grid_size_columns = 4
        grid.styles.height = "auto"
        self.query_one("#system", TextArea).styles.height = 5
        self.show_scope()

    def show_scope(self) -> None:
        """Fill the inputs for the scope: shared values, or one model's own (blank = shared)."""
        for name in PARAM_NAMES:
            field = self.query_one(f"#param-{name}", Input)
            shared = self.shared[name]
            if self.scope == SHARED:
                field.value = "" if shared is None else str(shared)
                field.placeholder = "random" if name == "seed" else ""
            else:
                own = self.overrides.get(self.scope, {}).get(name)
                field.value = "" if own is None else str(own)
                field.placeholder = f"shared: {'random' if shared is None else shared}"

    def take_inputs(self) -> None:
        """Check the inputs of the current scope and keep them; raises ValueError."""
        values = {name: self.query_one(f"#param-{name}", Input).value.strip() for name in PARAM_NAMES}
        if self.scope == SHARED:
            changes = {name: (value or None) if name == "seed" else value for name, value in values.items()}
            missing = [name for name, value in changes.items() if value == ""]
            if missing:
                raise ValueError(f"{missing[0]} needs a value")
            self.shared = SamplingParams().with_changes(changes).as_dict()
        else:
            given = {name: value for name, value in values.items() if value}
            checked = SamplingParams().with_changes(given)  # raises ValueError naming the bad field
            own = {name: getattr(checked, name) for name in given}
            self.overrides[self.scope] = own
            if not own:
                self.overrides.pop(self.scope)

    @on(Select.Changed, "#scope")
    def change_scope(self, event: Select.Changed) -> None:
        if event.value == self.scope:
            return
        try:
            self.take_inputs()
        except ValueError as error:
            self.query_one(".problem", Static).update(Text(safe_text(str(error))))
            scope: Select[str] = self.query_one("#scope", Select)
            scope.value = self.scope  # back to the scope whose inputs need fixing
            return
        self.scope = str(event.value)
        self.query_one(".problem", Static).update("")
        self.show_scope()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        try:
            self.take_inputs()
            params = SamplingParams().with_changes(self.shared)
        except ValueError as error:
            self.query_one(".problem", Static).update(Text(safe_text(str(error))))
            return
        system = self.query_one("#system", TextArea).text.strip()
        few_shot, logprobs = (self.query_one(f"#{name}", Checkbox).value for name in ("few-shot", "logprobs"))
        self.dismiss(Settings(params, self.overrides, system, few_shot, logprobs))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
