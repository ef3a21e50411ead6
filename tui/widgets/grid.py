"""The panes of a screen, laid out side by side or one at a time, scrolling together, and
the keys that move around them.

Panes are ordered live models first, then a replay's original replies, each by parameter
count. Narrower than `MIN_PANE_WIDTH` a pane, or when zoomed, only the current pane
shows, with a switcher line naming them all. With sync on, scrolling one pane scrolls
the others to the same turn.
"""

from __future__ import annotations

import math
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.reactive import reactive
from textual.widgets import Static

from tui.textsafe import safe_text
from tui.widgets.pane import STATES, ModelPane

MIN_PANE_WIDTH = 38


class PaneGrid(Vertical):
    zoomed: reactive[bool] = reactive(False)
    current: reactive[int] = reactive(0)

    def __init__(self) -> None:
        super().__init__(id="grid")
        self.panes: dict[str, ModelPane] = {}
        self.sync_scroll = True  # scrolling one pane scrolls the others to the same turn
        self._syncing = False

    def compose(self) -> ComposeResult:
        yield Static(id="switcher")
        yield Container(id="panes")

    def ordered(self) -> list[ModelPane]:
        return sorted(self.panes.values(), key=lambda pane: pane.place)  # by size, or a blind session's letters

    async def add(self, key: str, pane: ModelPane) -> None:
        self.panes[key] = pane
        ordered = self.ordered()
        index = ordered.index(pane)
        container = self.query_one("#panes", Container)
        if index + 1 < len(ordered):
            await container.mount(pane, before=ordered[index + 1])
        else:
            await container.mount(pane)
        self.watch(pane.turns, "scroll_y", lambda _: self.pane_scrolled(pane), init=False)
        self.watch(pane, "state", lambda _: self.update_switcher(), init=False)
        self.update_layout()

    async def remove_pane(self, key: str) -> None:
        pane = self.panes.pop(key)
        await pane.remove()
        self.current = min(self.current, max(len(self.panes) - 1, 0))
        self.update_layout()

    def current_pane(self) -> ModelPane | None:
        panes = self.ordered()
        return panes[min(self.current, len(panes) - 1)] if panes else None

    # --- layout ------------------------------------------------------------------------------

    def single(self) -> bool:
        return self.zoomed or self.size.width < MIN_PANE_WIDTH * min(len(self.panes), 4)

    def update_layout(self) -> None:
        panes = self.ordered()
        if not panes or not self.is_mounted:
            return
        self.current = min(self.current, len(panes) - 1)
        single = self.single()
        columns = 1 if single else min(len(panes), 4)
        grid = self.query_one("#panes", Container)
        grid.styles.grid_size_columns = columns
        grid.styles.grid_size_rows = 1 if single else math.ceil(len(panes) / columns)
        for index, pane in enumerate(panes):
            pane.display = not single or index == self.current
            pane.set_class(index == self.current, "-current")
        self.query_one("#switcher").display = single
        self.update_switcher()

    def update_switcher(self) -> None:
        line = Text()
        for index, pane in enumerate(self.ordered()):
            marker = "⟲ " if pane.original else ""
            label = f" {marker}{safe_text(pane.short_label)} {STATES[pane.state][0]} "
            line.append(label, style="reverse bold" if index == self.current else "")
            line.append(" ")
        line.append(" Alt+←/→ switch · F5 zoom", style="dim")
        self.query_one("#switcher", Static).update(line)

    def on_resize(self) -> None:
        self.update_layout()

    def watch_zoomed(self) -> None:
        self.update_layout()

    def watch_current(self) -> None:
        self.update_layout()

    def step(self, by: int) -> None:
        self.current = (self.current + by) % max(len(self.panes), 1)

    def toggle_sync(self) -> None:
        self.sync_scroll = not self.sync_scroll
        self.notify("Panes scroll together, aligned by turn" if self.sync_scroll else "Panes scroll one at a time")

    # --- scrolling together, aligned by turn -------------------------------------------------

    def scroll_current(self, amount: float) -> None:
        """Scroll the current pane by `amount` lines, or by that fraction of a page if under 1."""
        pane = self.current_pane()
        if pane:
            lines = amount * pane.turns.size.height if abs(amount) < 1 else amount
            pane.turns.scroll_relative(y=lines, animate=False)

    def scroll_to_turn(self, turn: int) -> None:
        for pane in self.panes.values():
            view = pane.turn_view(turn)
            if view is not None:
                pane.turns.scroll_to(y=view.virtual_region.y, animate=False, immediate=True)

    def pane_scrolled(self, pane: ModelPane) -> None:
        pane.scrolled()
        if not pane.at_end:  # keeping new text in view is not a scroll the others should copy
            self.align_others_to(pane)

    def top_turn(self, pane: ModelPane) -> int | None:
        top = pane.turns.scroll_y
        views = [view for view in pane.turns.children if view.has_class("turn")]
        anchor = next((v for v in reversed(views) if v.virtual_region.y <= top), None)
        return getattr(anchor, "turn", None)

    def current_turn(self, last: int) -> tuple[ModelPane, int] | None:
        """The current pane and the turn it shows of `last` turns: the latest while it shows its end, else
        the one at its top. None with no pane, or before the first turn."""
        pane = self.current_pane()
        if pane is None or last == 0:
            return None
        return pane, last if pane.at_end else (self.top_turn(pane) or last)

    def align_others_to(self, leader: ModelPane) -> None:
        """With sync on, scroll the other panes so that the turn at the top of `leader` is at their top."""
        if self._syncing or not self.sync_scroll:
            return
        turn = self.top_turn(leader)
        anchor = leader.turn_view(turn) if turn is not None else None
        if anchor is None:
            return
        fraction = (leader.turns.scroll_y - anchor.virtual_region.y) / max(anchor.virtual_region.height, 1)
        self._syncing = True
        try:
            for pane in self.panes.values():
                view = pane.turn_view(anchor.turn) if pane is not leader else None
                if view is not None:
                    target = view.virtual_region.y + fraction * view.virtual_region.height
                    pane.turns.scroll_to(y=target, animate=False, immediate=True)
        finally:
            self._syncing = False


class PaneKeys:
    """The keys that move around a screen's `PaneGrid`, in one place: a screen showing a grid
    inherits these actions and lists `PANE_BINDINGS` among its own bindings (Textual reads
    bindings only from widget classes, and the footer shows them in the order listed)."""

    grid: PaneGrid

    PANE_BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5", "zoom", "Zoom"),
        Binding("f9", "toggle_sync", "Sync scroll"),
        Binding("alt+left", "step(-1)", "◀ Pane"),
        Binding("alt+right", "step(1)", "Pane ▶"),
        Binding("alt+up", "scroll(-3)", "Scroll up", show=False),
        Binding("alt+down", "scroll(3)", "Scroll down", show=False),
        Binding("shift+pageup", "scroll(-0.8)", "Page up", show=False),
        Binding("shift+pagedown", "scroll(0.8)", "Page down", show=False),
    ]

    def action_zoom(self) -> None:
        self.grid.zoomed = not self.grid.zoomed

    def action_step(self, by: int) -> None:
        self.grid.step(by)

    def action_scroll(self, amount: float) -> None:
        self.grid.scroll_current(amount)

    def action_toggle_sync(self) -> None:
        self.grid.toggle_sync()
