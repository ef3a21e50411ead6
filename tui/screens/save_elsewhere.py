"""Asks for a folder to save the session in when its own cannot be written (Ctrl+S)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui.textsafe import safe_text


class SaveElsewhereScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "dismiss", "Cancel")]

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(safe_text(f"Saving stopped: {self.reason}")), classes="problem")
            yield Label("Save the whole session in this folder, and go on saving there:", classes="field-label")
            yield Input(str(Path.home()), id="folder")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def save(self) -> None:
        folder = self.query_one("#folder", Input).value.strip()
        self.dismiss(Path(folder).expanduser() if folder else None)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
