"""A reply streamed into `ReplyText` piece by piece shows, after every piece, exactly what the
same text shows given at once: the same characters in the same styles on every line, whatever
the pieces (code fences opening and closing mid-stream, lists growing past nine items, a last
block that turns into another kind, plain words added where they fit). Growing within its
room does not lay the screen out; a single newline breaks the line; a pane follows its newest
text unless the user has scrolled up."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from chat_app import loaded
from rich.console import Console
from rich.markdown import Markdown
from rich.style import Style
from scripted import ScriptedModel, card
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.geometry import Offset
from textual.screen import Screen
from textual.selection import Selection
from waiting import until

from tui.app import AppConfig, LadderApp
from tui.cards import Catalog
from tui.engine.events import SamplingParams
from tui.widgets.reply import ParsedMarkdown, ReplyText

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
    "plain words, then a link and an emoji": (
        "The lamp turned and turned, and the keeper watched the sea from the gallery all night long, "
        "while the ships went by. See [the log](https://example.org/log) 🌊🐟 and that was all."
    ),
}


class Counting(Screen[None]):
    """A reply 44 cells wide, alone on its screen, counting the layouts of the screen."""

    layouts = 0

    def compose(self) -> ComposeResult:
        yield VerticalScroll()

    def _refresh_layout(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.layouts += 1
        super()._refresh_layout(*args, **kwargs)


class OneReply(App[None]):
    CSS = "ReplyText { width: 44; }"

    def on_mount(self) -> None:
        self.push_screen(Counting())

    async def new_reply(self) -> ReplyText:
        reply = ReplyText()
        await self.screen.query_one(VerticalScroll).mount(reply)
        return reply


def cells(reply: ReplyText) -> list[list[tuple[str, str]]]:
    """What each line of the reply shows: a character and its style, cell by cell (the style as written,
    without the offsets for selecting text, which follow where Rich and the quick path split a line)."""
    lines = [reply.render_line(y) for y in range(reply.line_count)]
    return [[(char, str(segment.style)) for segment in line for char in segment.text] for line in lines]


def pieces(text: str, seed: int) -> list[str]:
    """The text cut at random, as tokens arrive: 1 to 12 characters a piece."""
    rng = random.Random(seed)
    cuts, at = [], 0
    while at < len(text):
        step = rng.randint(1, 12)
        cuts.append(text[at : at + step])
        at += step
    return cuts


@pytest.mark.parametrize("name", REPLIES)
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_reply_streamed_in_pieces_shows_what_the_whole_text_shows(name: str, seed: int) -> None:
    app = OneReply()
    async with app.run_test(size=(100, 200)) as pilot:
        streamed = await app.new_reply()
        await pilot.pause()
        text = ""
        for piece in pieces(REPLIES[name], seed):
            text += piece
            streamed.append(piece)
            reference = ReplyText()
            await app.screen.mount(reference)
            await pilot.pause()
            reference.append(text)
            assert cells(streamed) == cells(reference), f"after {text!r}"
            await reference.remove()


async def test_a_reply_streamed_a_character_at_a_time_ends_as_the_whole_text() -> None:
    text = "\n\n".join(REPLIES.values())
    app = OneReply()
    async with app.run_test(size=(100, 400)) as pilot:
        streamed = await app.new_reply()
        await pilot.pause()
        for char in text:
            streamed.append(char)
        streamed.end()
        reference = await app.new_reply()
        reference.append(text)
        reference.end()
        await pilot.pause()
        assert streamed.source == text
        assert cells(streamed) == cells(reference)


async def test_plain_words_that_fit_are_added_to_the_last_line_and_nothing_else_is_drawn_again() -> None:
    app = OneReply()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, Counting)
        reply = await app.new_reply()
        await pilot.pause()
        reply.append("The keeper climbed the stairs as the storm came in from the west and")  # two lines
        await pilot.pause()
        first = reply.live_lines[0]
        layouts = screen.layouts
        for word in [" the", " lamp", " turned."]:
            assert reply.append(word) is False  # no layout asked for
        await pilot.pause()
        assert reply.live_lines[0] is first  # the line above was not rendered again
        assert reply.live_lines[-1].text.rstrip().endswith("and the lamp turned.")
        assert screen.layouts == layouts


async def test_text_that_fits_the_room_is_drawn_without_laying_out_the_screen() -> None:
    app = OneReply()
    async with app.run_test(size=(80, 24)) as pilot:  # 24 rows: room for 4 lines
        screen = app.screen
        assert isinstance(screen, Counting)
        reply = await app.new_reply()
        reply.append("The keeper")
        await pilot.pause()
        assert reply.size.height == 1 + 4
        layouts = screen.layouts
        for line in range(2, 6):  # four more lines, each a word the width of the reply
            assert reply.append(f" {'x' * 43}") is False
            await pilot.pause()
            assert reply.line_count == line
        assert screen.layouts == layouts
        assert reply.append(f" {'y' * 43}") is True  # the sixth line: past the room, laid out with new room
        await pilot.pause()
        assert screen.layouts > layouts and reply.size.height == 6 + 4
        reply.end()  # the reply is complete: its room goes
        await pilot.pause()
        assert reply.size.height == 6


async def shown_whole(text: str) -> tuple[list[str], list[Style | None]]:
    """The lines a complete reply of `text` shows (without trailing spaces), and its styles."""
    app = OneReply()
    async with app.run_test(size=(100, 40)) as pilot:
        reply = await app.new_reply()
        reply.append(text)
        reply.end()
        await pilot.pause()
        lines = [reply.render_line(y) for y in range(reply.line_count)]
        return [line.text.rstrip() for line in lines], [segment.style for line in lines for segment in line]


async def test_a_single_newline_in_a_reply_breaks_the_line() -> None:
    shown, _ = await shown_whole("$ pwd\n/home/keeper\nls\n- oil\n- lamp")
    assert shown == ["$ pwd", "/home/keeper", "ls", "", " • oil", " • lamp"]


async def test_ordered_lists_are_numbered_as_written_and_aligned() -> None:
    shown, _ = await shown_whole("".join(f"{n}. step {n}\n" for n in range(8, 12)))
    assert shown == ["  8. step 8", "  9. step 9", " 10. step 10", " 11. step 11"]


async def test_rich_markup_and_links_in_a_reply_are_shown_as_written() -> None:
    lines, styles = await shown_whole("[bold red]not markup[/] and [a link](https://example.org) [@click=app.quit]x[/]")
    shown = " ".join(line.strip() for line in lines)
    assert "[bold red]not markup[/]" in shown and "a link (https://example.org)" in shown
    assert "[@click=app.quit]x[/]" in shown
    assert not any(style and style.link for style in styles)  # no link to click: its address is shown


async def test_text_selected_with_the_mouse_is_highlighted_and_copied_as_shown() -> None:
    app = OneReply()
    async with app.run_test(size=(100, 40)) as pilot:
        reply = await app.new_reply()
        reply.append("The keeper **climbed** the stairs.\nThe storm came in.")
        reply.end()
        await pilot.pause()
        assert reply.render_line(0).text.startswith("The keeper climbed")
        app.screen.selections = {reply: Selection(Offset(4, 0), Offset(9, 1))}  # as a drag from cell 4 to 9
        await pilot.pause()
        assert app.screen.get_selected_text() == "keeper climbed the stairs.\nThe storm"
        selected = app.screen.get_component_rich_style("screen--selection")
        styles = [segment.style for segment in reply.render_line(0) for _ in segment.text]
        assert (
            styles[4] and styles[4].bgcolor == selected.bgcolor and styles[3] and styles[3].bgcolor != selected.bgcolor
        )
        meta = [segment.style.meta.get("offset") for segment in reply.render_line(1) if segment.style]
        assert (0, 1) in meta  # where the mouse is, for the screen to select from


def test_parsed_markdown_renders_what_rich_s_own_markdown_renders() -> None:
    """ParsedMarkdown sets Rich's attributes itself (to reuse a parser): a Rich release that adds one
    shows here. Text without single newlines parses the same with either parser."""
    from markdown_it import MarkdownIt

    console = Console(width=44, force_terminal=True, color_system="truecolor")
    text = "\n\n".join(REPLIES[name] for name in ["code fence opened and closed mid-stream", "headings and a table"])
    ours = ParsedMarkdown(MarkdownIt().enable("strikethrough").enable("table").parse(text))
    ours.elements = Markdown.elements  # Rich's own list items: ours number them as written
    assert console.render_lines(ours, console.options) == console.render_lines(
        Markdown(text, hyperlinks=False), console.options
    )


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
        assert reply.size.height == reply.line_count  # no room left below a reply that ended
        assert reply.source.startswith("word0 word1") and turns.scroll_y >= turns.max_scroll_y - 1
