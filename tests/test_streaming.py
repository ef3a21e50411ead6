"""A reply streamed into `ReplyMarkdown` piece by piece shows exactly what Textual's own
Markdown shows for the same text given at once: the same blocks, text, bullets and sizes,
after every piece, whatever the pieces (code fences opening and closing mid-stream, lists
growing past nine items, a last block that turns into another kind). Updating the last
block lays the screen out only when it outgrows its size (a growing paragraph has a few lines
of room, gone when the reply ends), and a streaming pane follows its newest text unless the
user has scrolled up."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from chat_app import loaded
from scripted import ScriptedModel, card
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownBullet, MarkdownParagraph
from waiting import until

from tui.app import AppConfig, LadderApp
from tui.cards import Catalog
from tui.engine.events import SamplingParams
from tui.widgets.streaming import ROOM, ReplyMarkdown, line_breaking_markdown

REPLIES = {
    "paragraphs": (
        "The keeper climbed the **hundred and twelve** steps, counting them as he always did.\n"
        "A line of its own.\n\nThe storm came in from the west, with `rain` and *wind*, and the lamp "
        "turned through the night without stopping once, as it had every night for forty years."
    ),
    "code fence opened and closed mid-stream": (
        "Here is the function:\n\n```python\ndef lamp(on: bool) -> str:\n    return 'lit' if on else 'dark'\n```\n\n"
        "And the shell:\n\n```\n$ ls -la /var/lighthouse\ntotal 0\n```\nDone."
    ),
    "lists: nested, loose, ordered past nine": (
        "Things he kept:\n\n- a lamp\n- oil, **two** barrels\n  - one full\n  - one half\n- a log book\n\n"
        + "".join(f"{n}. step {n} of the climb\n" for n in range(1, 13))
        + "\n* loose one\n\n* loose two\n\nAfter the lists."
    ),
    "last block changes kind": (
        "Title\n===\n\nA paragraph that\n---\n\n``not yet a fence\n\n```\nnow a fence\n```\n\n"
        "-\n--\n\n> a quote\n> - with a list\n> - of two\n\n2024. a year, then a list\n\nend"
    ),
    "headings and a table": (
        "# One\n\n## Two\n\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n### Three\nafter"
    ),
}


def shape(widget: Widget) -> list[object]:
    """What a Markdown widget shows, as nested lists: each descendant's Textual class (ours
    subclass Textual's), its text or bullet, its size, then its children. A growing paragraph
    given room has the height of its text, and its room is checked."""
    described: list[object] = []
    for child in widget.children:
        size = tuple(child.size)
        if child is getattr(widget, "roomy", None):
            lines = child.get_content_height(child.size, child.size, child.size.width)
            assert lines < child.size.height <= lines + ROOM, "room to grow into, and no more"
            size = (child.size.width, lines)
        kind = next(c.__name__ for c in type(child).__mro__ if c.__module__.startswith("textual."))
        # Textual's own update of a streamed table adds its rows' cells as plain Statics, where a whole
        # render has the same with link handling: they look the same.
        kind = "Static" if kind == "MarkdownTableCellContents" else kind
        if isinstance(child, MarkdownBullet):
            shown: object = child.symbol
        elif hasattr(child, "visual") and isinstance(child.visual, Content):
            shown = child.visual.markup
        else:
            shown = None
        described.append([kind, shown, size, shape(child)])
    return described


class OneMarkdown(App[None]):
    """A Markdown widget 44 cells wide, alone on its screen: laying out anything else would
    lay it out too, and hide a layout it missed."""

    CSS = "Markdown { width: 44; }"

    def __init__(self, markdown: Markdown) -> None:
        super().__init__()
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield self.markdown


def pieces(text: str, seed: int) -> list[str]:
    """The text cut at random, as tokens arrive: 1 to 12 characters a piece."""
    rng = random.Random(seed)
    cuts, at = [], 0
    while at < len(text):
        step = rng.randint(1, 12)
        cuts.append(text[at : at + step])
        at += step
    return cuts


async def streamed(parts: list[str]) -> list[list[object]]:
    """What a `ReplyMarkdown` shows after each part is appended."""
    app = OneMarkdown(ReplyMarkdown())
    shapes = []
    async with app.run_test(size=(100, 200)) as pilot:
        for part in parts:
            await app.markdown.append(part)
            await pilot.pause()  # laid out and drawn
            shapes.append(shape(app.markdown))
    return shapes


async def shown_at_once(texts: list[str]) -> list[list[object]]:
    """What Textual's Markdown shows for each text, given whole."""
    app = OneMarkdown(Markdown(parser_factory=line_breaking_markdown))
    shapes = []
    async with app.run_test(size=(100, 200)) as pilot:
        for text in texts:
            await app.markdown.update(text)
            await pilot.pause()
            shapes.append(shape(app.markdown))
    return shapes


@pytest.mark.parametrize("name", REPLIES)
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_reply_streamed_in_pieces_shows_what_the_whole_text_shows(name: str, seed: int) -> None:
    parts = pieces(REPLIES[name], seed)
    texts = ["".join(parts[: n + 1]) for n in range(len(parts))]
    for text, piece_by_piece, at_once in zip(texts, await streamed(parts), await shown_at_once(texts), strict=True):
        assert piece_by_piece == at_once, f"after {text!r}"


async def test_a_reply_streamed_a_character_at_a_time_ends_as_the_whole_text() -> None:
    text = "".join(REPLIES.values())
    app = OneMarkdown(ReplyMarkdown())
    async with app.run_test(size=(100, 200)) as pilot:
        for char in text:
            await app.markdown.append(char)
        await pilot.pause()
        assert app.markdown.source == text
        assert shape(app.markdown) == (await shown_at_once([text]))[0]


class CountingLayouts(Screen[None]):
    layouts = 0

    def compose(self) -> ComposeResult:
        yield ReplyMarkdown()

    def _refresh_layout(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.layouts += 1
        super()._refresh_layout(*args, **kwargs)


class OneReply(App[None]):
    CSS = "ReplyMarkdown { width: 44; }"

    def on_mount(self) -> None:
        self.push_screen(CountingLayouts())


async def test_text_that_fits_the_last_paragraph_or_its_room_is_drawn_without_laying_out_the_screen() -> None:
    app = OneReply()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, CountingLayouts)
        reply = screen.query_one(ReplyMarkdown)
        await reply.append("The keeper")
        await pilot.pause()
        paragraph = reply.query_one(MarkdownParagraph)
        before = screen.layouts
        for word in [" climbed", " the", " stairs."]:  # 30 cells in all: one line of the 40 inside the margins
            await reply.append(word)
            await pilot.pause()
        assert screen.layouts == before
        assert paragraph.visual.markup.endswith("stairs.")  # drawn with the new text, in the same widget
        await reply.append(" Then the storm came in from the west.")  # wraps: two lines, and room for more
        await pilot.pause()
        assert screen.layouts > before and paragraph.size.height == 2 + ROOM
        before = screen.layouts
        await reply.append(" It rained all night, and the lamp turned.")  # a third line, in the room
        await pilot.pause()
        assert screen.layouts == before and paragraph.size.height == 2 + ROOM
        await reply.append("\n\nThe next day")  # a new paragraph: the finished one keeps no room
        await pilot.pause()
        assert paragraph.size.height == 3 and reply.roomy is None


async def test_a_single_newline_in_a_reply_breaks_the_line() -> None:
    app = OneMarkdown(ReplyMarkdown())
    async with app.run_test(size=(100, 40)) as pilot:
        await app.markdown.append("$ pwd\n/home/keeper\n- oil\nlamp")
        await pilot.pause()
        assert [block.visual.markup for block in app.markdown.query(MarkdownParagraph)] == [
            "$ pwd\n/home/keeper",
            "oil\nlamp",  # a line right after a list item continues it
        ]


async def test_a_streaming_pane_follows_its_newest_text_but_not_while_scrolled_up(tmp_path: Path) -> None:
    tiny = card("tiny", 100_000_000, "Tiny 100M")
    words = " ".join(f"word{n}" for n in range(3000))
    config = AppConfig(
        catalog=Catalog(cards={tiny.id: tiny}),
        cards=[tiny],
        make_backend=lambda c: ScriptedModel(c, script=lambda request: words, delay=0.002),
        sessions_dir=tmp_path / "sessions",
        params=SamplingParams(max_tokens=3000),
    )
    app = LadderApp(config)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        pane, turns = screen.panes["tiny"], screen.panes["tiny"].turns
        screen.send_turn("Count")

        def at_end_past(lines: int) -> bool:
            return turns.max_scroll_y > lines and turns.scroll_y >= turns.max_scroll_y - 1

        await until(pilot, lambda: at_end_past(10), what="the newest text in view, past the first screen")
        turns.scroll_to(y=0, animate=False, immediate=True)  # the user scrolls up to read
        height = turns.max_scroll_y
        await until(pilot, lambda: turns.max_scroll_y > height + 10, what="ten more lines")
        assert turns.scroll_y == 0 and not pane.at_end
        turns.scroll_end(animate=False, immediate=True)  # and back to the end
        height = turns.max_scroll_y
        await until(pilot, lambda: at_end_past(height + 10), what="following the newest text again")
        assert pane.state == "streaming"  # followed while it streamed, not only once it ended
        await screen.action_cancel_all()
        await until(pilot, lambda: pane.state == "cancelled", what="the reply cancelled")
        await pilot.pause()
        reply = pane.turn_view(1).reply  # type: ignore[union-attr]
        paragraph = reply.query_one(MarkdownParagraph)
        lines = paragraph.get_content_height(paragraph.size, paragraph.size, paragraph.size.width)
        assert reply.roomy is None and paragraph.size.height == lines  # no room left below an ended reply
