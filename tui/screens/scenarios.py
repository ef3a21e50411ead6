"""Pick a scenario: a new session starts in it. Two keystrokes for a demo: F6, Enter."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.scenario import Scenario
from tui.textsafe import safe_text


class ScenarioScreen(ModalScreen[Scenario | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, scenarios: dict[str, Scenario], current: str | None) -> None:
        super().__init__()
        self.scenarios = sorted(scenarios.values(), key=lambda s: s.title)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("[b]Scenario[/b] · Enter starts a new session in it")
            options = []
            for scenario in self.scenarios:
                count = scenario.item_count
                items = " · items: generated" if count is None else f" · {count} items" if count else ""
                check = f" · check: {scenario.check}" if scenario.check else ""
                label = Text.assemble((safe_text(scenario.title), "bold"), (safe_text(f"{items}{check}"), "dim"))
                options.append(Option(label, id=scenario.id))
            yield OptionList(*options, id="scenarios")
            yield Static("", id="description")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.styles.height = min(len(self.scenarios) + 2, 14)
        ids = [s.id for s in self.scenarios]
        options.highlighted = ids.index(self.current) if self.current in ids else 0
        options.focus()

    @on(OptionList.OptionHighlighted)
    def describe(self, event: OptionList.OptionHighlighted) -> None:
        scenario = next(s for s in self.scenarios if s.id == event.option.id)
        self.query_one("#description", Static).update(Text(safe_text(scenario.description), style="italic"))

    @on(OptionList.OptionSelected)
    def choose(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(next(s for s in self.scenarios if s.id == event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)
