"""The chat screen draws a frame with `CroppedCompositor`, which draws only the rows and the
widgets that changed (tui/widgets/compositor.py). Here every update the app sends to the
terminal, while four panes stream Markdown, is painted onto a screen of cells as a terminal
would; after every update, that screen must equal the whole screen drawn by Textual's own
compositor, character and style, cell by cell."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from chat_app import loaded
from rich.console import Console, RenderableType
from rich.segment import ControlType
from rich.style import Style
from scripted import ScriptedModel, card
from textual._compositor import Compositor, CompositorUpdate
from textual.screen import Screen
from waiting import until

import tui.app
from tui.app import AppConfig, LadderApp
from tui.cards import Catalog
from tui.engine.events import SamplingParams
from tui.widgets.compositor import CroppedCompositor

Cell = tuple[str, Style | None]
CARDS = [card(f"m{n}", size, f"M{n}") for n, size in enumerate([100_000_000, 200_000_000, 500_000_000, 1_500_000_000])]
REPLY = "\n\n".join(
    [
        "# The keeper",
        "He climbed the **narrow** stairs as the storm came in from the west, and the lamp turned. " * 3,
        "1. the lamp\n2. the lens\n3. the `stairs`",
        "```\n$ ls /var/lighthouse\nlog.txt\n```",
        "> a quote, and then the end " * 4,
    ]
    * 3
)


class Terminal:
    """A terminal's screen of cells, painted by the updates an app writes to it."""

    def __init__(self, width: int, height: int) -> None:
        self.cells: list[list[Cell]] = [[(" ", None)] * width for _ in range(height)]

    def paint(self, update: RenderableType, console: Console) -> None:
        assert isinstance(update, CompositorUpdate)
        x = y = 0
        for segment in update.__rich_console__(console, console.options):
            for control in segment.control or ():
                if control[0] == ControlType.CURSOR_MOVE_TO:
                    x, y = int(control[1]), int(control[2])  # type: ignore[misc]
            if segment.control:
                continue
            for char in segment.text:
                if char == "\n":
                    x, y = 0, y + 1
                    continue
                self.cells[y][x] = (char, segment.style)
                x += 1


class Recording(LadderApp):
    """The chat app, its terminal painted with every update it writes (this test's window into it),
    and compared with the whole screen drawn at once after each."""

    CSS_PATH = str(Path(tui.app.__file__).with_name("app.tcss"))  # relative paths are to the subclass's file
    terminal: Terminal | None = None
    compared = 0
    differed: list[int] = []

    def _display(self, screen: Screen[object], renderable: RenderableType | None) -> None:
        if renderable is not None and not self._batch_count and self.terminal is not None:
            self.terminal.paint(renderable, self.console)
            if settled(screen):  # else a change is on its way to the next frame, and the whole screen shows it
                self.compared += 1
                if self.terminal.cells != drawn_whole(screen):
                    self.differed.append(self.compared)
        super()._display(screen, renderable)


def settled(screen: Screen[object]) -> bool:
    """Whether every change to the widgets on screen is in the update being written: none waits for the next
    (a widget's refresh reaches the screen a message later, and a scroll a frame later)."""
    if screen._compositor._dirty_regions or screen._scroll_required:
        return False
    return not any(widget._repaint_required or widget._repaint_regions for widget in screen._compositor.visible_widgets)


def drawn_whole(screen: Screen[object]) -> list[list[Cell]]:
    """The screen drawn whole by Textual's own compositor."""
    compositor = screen._compositor
    assert isinstance(compositor, CroppedCompositor)
    compositor._get_renders = partial(Compositor._get_renders, compositor)  # type: ignore[method-assign]
    try:
        strips = compositor.render_strips()
    finally:
        del compositor._get_renders
    return [[(char, segment.style) for segment in strip for char in segment.text] for strip in strips]


async def test_the_terminal_shows_after_every_partial_update_what_the_whole_screen_draws(tmp_path: Path) -> None:
    config = AppConfig(
        catalog=Catalog(cards={c.id: c for c in CARDS}),
        cards=CARDS,
        make_backend=lambda c: ScriptedModel(c, script=lambda request: REPLY, delay=0.01 * (1 + CARDS.index(c))),
        sessions_dir=tmp_path,
        params=SamplingParams(max_tokens=5000),
    )
    app = Recording(config)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await loaded(pilot)
        assert isinstance(screen._compositor, CroppedCompositor)
        app.terminal = Terminal(160, 40)
        app.terminal.cells = drawn_whole(screen)  # what the terminal shows now: only updates follow
        screen.send_turn("Tell me of the keeper")
        panes = list(screen.panes.values())

        def shown_words(words: int) -> bool:
            return all(pane.reply_view and len(pane.reply_view.reply.source.split()) > words for pane in panes)

        await until(pilot, lambda: shown_words(200), timeout=60, what="200 words in every pane, past its first screen")
        await screen.action_cancel_all()
        await until(pilot, lambda: all(pane.state in ("cancelled", "done") for pane in panes), what="the replies ended")
        await pilot.pause()
        assert app.compared > 20 and app.differed == []
