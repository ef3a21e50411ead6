"""A reply's Markdown as lines of text: cheap to show while it streams, four panes at once.

Textual's `Markdown` widget is a tree of widgets, one per block, list item and bullet. Every
frame draws again each widget that overlaps what changed, and a reply growing by a line lays
out the whole screen: with four panes streaming that cost 14 ms a frame and 25 to 40 ms a
layout on the development machine (README, Performance, figure 4). `ReplyText` is one widget
that holds its lines (Textual's line API). Rich renders each top-level block of the reply's
Markdown once; only the last block, the one still growing, is rendered again as text
arrives, and only the lines that changed are drawn. While the reply streams its height keeps
a few empty lines of room below the text, so the screen is laid out once per few lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from rich import markdown
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.markdown import Markdown
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.selection import Selection
from textual.strip import Strip
from textual.widget import Widget

ROOM_SHARE = 6  # a streaming reply keeps this share of the screen's rows empty below its text (at least 4 rows),
# for it to grow into without a layout


def line_breaking_markdown() -> MarkdownIt:
    """Markdown where a single newline breaks the line, as models mean it: terminal output or
    a list written without a code block keeps its lines."""
    parser = MarkdownIt("commonmark").enable(["strikethrough", "table"])
    parser.core.ruler.push("hard_breaks", hard_breaks)
    return parser


def hard_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or []:
            if child.type == "softbreak":
                child.type = "hardbreak"


PARSER = line_breaking_markdown()  # one for all replies: making one takes longer than parsing a block


class ListItem(markdown.ListItem):
    """A list item as Rich draws it, but numbered as the model wrote it: "1." where Rich writes "1"."""

    def render_number(
        self, console: Console, options: ConsoleOptions, number: int, last_number: int
    ) -> Iterator[Segment]:
        width = len(str(last_number)) + 3
        lines = console.render_lines(self.elements, options.update(width=options.max_width - width), style=self.style)
        style = console.get_style("markdown.item.number", default="none")
        for index, line in enumerate(lines):
            yield Segment(f"{number}.".rjust(width - 1) + " " if index == 0 else " " * width, style)
            yield from line
            yield Segment.line()


class ParsedMarkdown(Markdown):
    """Rich's Markdown renderable, given tokens already parsed (Rich makes a parser for each
    renderable, which took longer than rendering a paragraph). Links show their address: a
    reply is a model's text, and where a link goes should be seen."""

    elements = {**Markdown.elements, "list_item_open": ListItem}

    def __init__(self, tokens: list[Token]) -> None:  # Rich's own, less its parser (tests/test_reply.py checks)
        self.markup = ""
        self.parsed = tokens
        self.code_theme = self.inline_code_theme = "monokai"
        self.justify = None
        self.style = "none"
        self.hyperlinks = False
        self.inline_code_lexer = None


def split_blocks(tokens: list[Token]) -> list[list[Token]]:
    """The tokens of each top-level block, in order."""
    blocks: list[list[Token]] = []
    for token in tokens:
        if token.level == 0 and token.nesting >= 0:
            blocks.append([])
        if not blocks:
            blocks.append([])
        blocks[-1].append(token)
    return blocks


def render_block(tokens: list[Token], console: Console, options: ConsoleOptions) -> list[list[Segment]]:
    """A block's lines at the options' width, without the empty lines Rich puts around some blocks
    (a code block's padding, which has its background, stays)."""
    lines = console.render_lines(ParsedMarkdown(tokens), options, pad=False)
    while lines and empty(lines[-1]):
        lines.pop()
    while lines and empty(lines[0]):
        lines.pop(0)
    return lines


def empty(line: list[Segment]) -> bool:
    return all(not segment.text.strip() and not (segment.style and segment.style.bgcolor) for segment in line)


class ReplyText(Widget):
    """A reply: `append` shows more of it, rendering only its last block again; `end` says it
    is complete (its room below goes). The reply's source is `source`."""

    DEFAULT_CSS = "ReplyText { height: auto; }"

    def __init__(self, classes: str = "") -> None:
        super().__init__(classes=classes)
        self.source = ""
        self.finished: list[str] = []  # the source of each block that can no longer change
        self.live = ""  # the source of the last block, which more text may change
        self.streaming = True
        self.width = 0  # the width the lines were rendered at
        self.finished_lines: list[Strip] = []  # every finished block's lines, an empty line after each
        self.live_lines: list[Strip] = []
        self.live_shown = -1  # how much of `live` its lines show, when it is a paragraph that may simply grow
        self.height_given = 0  # the height last reported for layout: the lines, and room while streaming
        self.base_style: Style | None = None  # the widget's colours under Rich's, kept until the CSS changes

    @property
    def line_count(self) -> int:
        return len(self.finished_lines) + len(self.live_lines)

    def line(self, y: int) -> Strip | None:
        finished = len(self.finished_lines)
        if y < finished:
            return self.finished_lines[y]
        return self.live_lines[y - finished] if y - finished < len(self.live_lines) else None

    def append(self, text: str) -> bool:
        """Show `text` after what is shown; whether the reply outgrew its room (the screen is laid out)."""
        if not text:
            return False
        self.source += text
        self.live += text.replace("\r\n", "\n").replace("\r", "\n")  # markdown-it's lines, for the blocks' line numbers
        if not self.width:
            return False  # not laid out yet: the lines are rendered at the width the layout gives
        if self.extend_last_line():
            self.refresh(Region(0, self.line_count - 1, self.size.width, 1))
            return False
        before = len(self.finished_lines), self.live_lines
        self.render_live(self.width)
        return self.show_changes(*before)

    def end(self) -> None:
        """The reply is complete: no room below it any more, and its last block rendered in full."""
        self.streaming = False
        if self.width:
            self.render_live(self.width)
        self.refresh(layout=True)

    def extend_last_line(self) -> bool:
        """The quick way for the most common update: plain words added to a paragraph, on its last
        line, where they fit. Rendering the paragraph again costs up to a millisecond, four panes
        ten times a second; these lines are the same (tests/test_reply.py checks), and any other
        text, or words that wrap, are rendered in full."""
        if self.live_shown < 0 or not self.live_lines:
            return False
        shown = self.live.rstrip()  # a paragraph's trailing spaces are not shown until more text follows them
        added = shown[self.live_shown :]
        last = self.live_lines[-1]
        width = cell_len(last.text.rstrip())  # Rich pads a paragraph's lines to the full width
        if not PLAIN_WORDS.fullmatch(added) or width + cell_len(added) > self.width:
            return False
        self.live_lines[-1] = Strip([*last.crop(0, width), Segment(added, plain_style(self.app.console))])
        self.live_shown = len(shown)
        return True

    def render_live(self, width: int) -> None:
        """Render the last block again; any blocks finished by the new text get their lines for good."""
        console = self.app.console
        options = console.options.update(width=width, height=None)
        *done, last = split_blocks(PARSER.parse(self.live)) or [[]]
        if done:
            lines_of = self.live.split("\n")
            start = last[0].map[0] if last and last[0].map else len(lines_of)
            self.finished.append("\n".join(lines_of[:start]) + "\n")
            self.live = "\n".join(lines_of[start:])
            for block in done:
                self.finished_lines += [Strip(line) for line in render_block(block, console, options)] + [Strip([])]
        self.live_lines = [Strip(line) for line in render_block(last, console, options)]
        # A paragraph of at least a line (a shorter one may still turn into a heading or a list) may simply grow.
        paragraph = [token.type for token in last] == ["paragraph_open", "inline", "paragraph_close"]
        self.live_shown = len(self.live.rstrip()) if paragraph and len(self.live) >= 8 and self.streaming else -1

    def render_all(self, width: int) -> None:
        """Every block at a new width."""
        self.width = width
        self.finished_lines = []
        console = self.app.console
        options = console.options.update(width=width, height=None)
        for source in self.finished:
            for block in split_blocks(PARSER.parse(source)):
                self.finished_lines += [Strip(line) for line in render_block(block, console, options)] + [Strip([])]
        self.render_live(width)

    def show_changes(self, finished_before: int, live_before: list[Strip]) -> bool:
        """Draw the lines that changed since the last block was rendered before (from `finished_before`
        finished lines and `live_before`); lay the screen out only if they no longer fit (and say so)."""
        count = self.line_count
        if count > self.height_given or (not self.streaming and count != self.height_given):
            self.refresh(layout=True)
            return True
        first = finished_before
        if len(self.finished_lines) == finished_before:  # the same block: from its first changed line
            unchanged = zip(live_before, self.live_lines, strict=False)
            first += next((y for y, (old, new) in enumerate(unchanged) if old.text != new.text), len(live_before))
        end = max(count, finished_before + len(live_before))
        if first < end:
            self.refresh(Region(0, first, self.size.width, end - first))
        return False

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self.width:
            self.render_all(width)
        lines = self.line_count
        room = max(4, self.screen.size.height // ROOM_SHARE)
        self.height_given = lines + room if self.streaming and lines else lines
        return self.height_given

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.base_style = None

    def render_line(self, y: int) -> Strip:
        # Textual forgets a widget's style at every refresh: working it out again took a tenth of a frame.
        base = self.base_style = self.base_style or self.rich_style
        line = self.line(y)
        if line is None:
            return Strip.blank(self.size.width, base)
        strip = line.apply_style(base)
        selection = self.text_selection
        if selection is not None and (span := selection.get_span(y)) is not None:
            end = strip.cell_length if span[1] == -1 else min(span[1], strip.cell_length)
            start = min(span[0], end)
            selected = self.screen.get_component_rich_style("screen--selection")
            before, inside, after = strip.divide([start, end, strip.cell_length])
            strip = Strip.join([before, Strip(Segment.apply_style(inside, post_style=selected)), after])
        # The offsets let the screen map a mouse position to the text, for selecting it.
        return strip.adjust_cell_length(self.size.width, base).apply_offsets(0, y)

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        lines = self.finished_lines + self.live_lines
        return selection.extract("\n".join(line.text.rstrip() for line in lines)), "\n"


PLAIN_WORDS = re.compile(r"(?:[^\W_]|[ .,;:'\"?!-])*")  # text that Markdown shows as it is, in a paragraph


@lru_cache(maxsize=4)
def plain_style(console: Console) -> Style | None:
    """The style Rich gives a paragraph's plain words."""
    return render_block(PARSER.parse("words"), console, console.options)[0][0].style
