"""The keys, listed from the chat screen's own bindings so the list cannot go stale."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

COMPOSER_KEYS = [
    ("Enter", "send the turn to every ready model"),
    ("Ctrl+J / Shift+Enter", "new line in the composer"),
    ("Ctrl+P", "command palette: every action by name"),
    ("Ctrl+Q", "quit"),
]


NAMES = {"escape": "Esc", "left": "←", "right": "→", "up": "↑", "down": "↓", "pageup": "PgUp", "pagedown": "PgDn"}


def key_label(key: str) -> str:
    """ "ctrl+left,alt+f1" -> "Ctrl+← / Alt+F1"."""

    def one(part: str) -> str:
        *modifiers, name = part.split("+")
        name = NAMES.get(name, name.upper() if len(name) <= 3 else name)
        return "+".join([m.capitalize() for m in modifiers] + [name])

    return " / ".join(one(part) for part in key.split(","))


def keys_table(bindings: list[BindingType]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    table.add_column("key")
    table.add_column("action")
    for key, action in COMPOSER_KEYS:
        table.add_row(key, action)
    for binding in bindings:
        if isinstance(binding, Binding) and binding.description:
            table.add_row(key_label(binding.key), binding.description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, bindings: list[BindingType]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog"):
            yield Static("[b]Keys[/b] (Esc closes)\n")
            yield Static(keys_table(self.bindings))
