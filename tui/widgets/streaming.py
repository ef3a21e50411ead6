"""A reply's Markdown, shown as it streams in, at the cost of what changed.

Textual's `Markdown.append` keeps a reply's finished blocks and parses again from its last
block only. What it still cost per update, measured with four panes streaming at 200×50
(README, Performance, figure 4): a new parser for every append; a layout of the whole
screen for every change of the last block, though a line fills up several times before it
wraps; and a list or a quote taken down and mounted again whole, every item of it.
`ReplyMarkdown` keeps one parser, updates the last block in place (a list keeps its
finished items, and only its last item changes) and asks for a layout only when a block
no longer fits its size. A growing last paragraph is given a few empty lines of room, so
that it lays the screen out once per few lines, not for every line.

This builds on the block classes of `textual.widgets._markdown` (Textual 8.2): their
`_update_from_block`, `_blocks` and `_content`. tests/test_streaming.py checks that a reply
streamed in pieces shows exactly the blocks of the same text shown at once, so a Textual
release that changes them fails there, not on screen.
"""

from __future__ import annotations

from contextlib import suppress

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.await_complete import AwaitComplete
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Label, Markdown, Static
from textual.widgets._markdown import (
    MarkdownBlock,
    MarkdownBlockQuote,
    MarkdownBullet,
    MarkdownBulletList,
    MarkdownFence,
    MarkdownList,
    MarkdownListItem,
    MarkdownOrderedList,
    MarkdownParagraph,
)


def line_breaking_markdown() -> MarkdownIt:
    """Markdown where a single newline breaks the line, as models mean it: terminal
    output or a list written without a code block keeps its lines. (markdown-it's own
    `breaks` option changes only its HTML: Textual draws a soft break as a space.)"""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("hard_breaks", hard_breaks)
    return parser


def hard_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or []:
            if child.type == "softbreak":
                child.type = "hardbreak"


ROOM = 3  # empty lines below a reply's growing last paragraph, for it to grow into


class ReplyMarkdown(Markdown):
    """A reply: `append` shows more of it, changing only the blocks the new text changed.
    Its last paragraph, while it grows, is given room (`ROOM` empty lines) to grow into
    without a layout of the screen; `end_room` takes the room away when the reply ends."""

    def __init__(self, classes: str = "") -> None:
        parser = line_breaking_markdown()  # one per reply: making one took longer than parsing the new text
        super().__init__("", classes=classes, parser_factory=lambda: parser)
        self.roomy: Widget | None = None  # the paragraph given room, if any

    def get_block_class(self, block_name: str) -> type[MarkdownBlock]:
        return IN_PLACE.get(block_name) or super().get_block_class(block_name)

    def append(self, markdown: str) -> AwaitComplete:
        appended = super().append(markdown)

        async def then_end_finished_room() -> None:
            await appended
            if self.roomy is not None and self.roomy is not (self.children[-1] if self.children else None):
                self.end_room()  # a block came after it, or took its place

        return AwaitComplete(then_end_finished_room())

    def grow(self, block: Widget, height: int) -> bool:
        """Give `block` room to grow into past `height` lines, if it is the reply's last block;
        whether it was given (the new size lays the screen out)."""
        if block.parent is not self or self.children[-1] is not block:
            return False
        if self.roomy is not block:
            self.end_room()
        block.styles.min_height = height + ROOM
        self.roomy = block
        return True

    def end_room(self) -> None:
        if self.roomy is not None:
            self.roomy.styles.min_height = None
            self.roomy = None


def show_content(widget: Static, content: Content, *, fixed_width: bool) -> None:
    """Show `content` in `widget`, laying the screen out again only if it no longer fits the
    widget's size: its height (a paragraph with room may grow into it), and for a widget as
    wide as its widest line (`fixed_width` False), its width."""
    before = widget.content_size
    widget.update(content, layout=False)
    width = before.width
    if not widget.is_mounted or not width:
        widget.refresh(layout=True)
        return
    height = widget.get_content_height(before, before, width)
    wider = not fixed_width and widget.get_content_width(before, before) > width
    reply = widget.parent
    roomy = isinstance(reply, ReplyMarkdown) and reply.roomy is widget
    if not wider and (height == before.height or (roomy and height < before.height)):
        return
    if fixed_width and height > before.height and isinstance(reply, ReplyMarkdown) and reply.grow(widget, height):
        return
    widget.refresh(layout=True)


async def replace(old: Widget, new: Widget) -> None:
    """Put `new` where `old` is, in whichever container that is."""
    parent = old.parent
    assert isinstance(parent, Widget), "a mounted block is in a widget"
    await parent.mount(new, after=old)
    await old.remove()


async def update_block(old: MarkdownBlock, new: MarkdownBlock) -> None:
    """Make the mounted block `old` show `new`, its source parsed again with more text."""
    if type(old) is type(new) and isinstance(old, (ParagraphInPlace, FenceInPlace, QuoteInPlace, *LISTS)):
        await old._update_from_block(new)
    else:  # another kind of block (a paragraph became a list, a heading or a code block), or one kept as Textual has it
        await replace(old, new)


async def update_blocks(container: Widget, blocks: list[MarkdownBlock]) -> None:
    """Make the blocks mounted in `container` show `blocks`, the same parsed again with more
    text: those before the last were finished and stay, the last may have changed, and
    any after it are new."""
    mounted = [child for child in container.children if isinstance(child, MarkdownBlock)]
    if len(blocks) < len(mounted):  # not more of the same text: show it anew
        await container.remove_children(mounted)
        await container.mount_all(blocks)
        return
    if mounted:
        await update_block(mounted[-1], blocks[len(mounted) - 1])
    if blocks[len(mounted) :]:
        await container.mount_all(blocks[len(mounted) :])


class ParagraphInPlace(MarkdownParagraph):
    def set_content(self, content: Content) -> None:
        self._content = content
        show_content(self, content, fixed_width=True)


class FenceInPlace(MarkdownFence):
    def set_content(self, content: Content) -> None:
        self._content = content
        with suppress(NoMatches):  # not composed yet: it shows its code once it is
            show_content(self.query_one("#code-content", Label), content, fixed_width=False)


class QuoteInPlace(MarkdownBlockQuote):
    async def _update_from_block(self, block: MarkdownBlock) -> None:
        if type(block) is not type(self):
            await replace(self, block)
            return
        self._copy_context(block)
        await update_blocks(self, block._blocks)


def bullets(block: MarkdownList) -> list[str]:
    """The bullet of each item, as Textual's lists compose them: an ordered list numbers its
    items from its first item's number, right-aligned to the widest."""
    items = [item for item in block._blocks if isinstance(item, MarkdownListItem)]
    if not isinstance(block, MarkdownOrderedList):
        return [item.bullet for item in items]
    start = 1
    with suppress(ValueError, IndexError):
        start = int(items[0].bullet)
    numbers = [f"{number}. " for number in range(start, start + len(items))]
    width = max((len(number) for number in numbers), default=0)
    return [number.rjust(width + 1) for number in numbers]


class ListInPlace(MarkdownList):
    """A list streams item by item: its finished items stay, the last one is updated in
    place, new ones are added. Mounted, each item is a row: its bullet, then its blocks."""

    async def _update_from_block(self, block: MarkdownBlock) -> None:
        rows = [child for child in self.children if isinstance(child, Horizontal)]
        symbols = bullets(block) if isinstance(block, MarkdownList) else []
        shown = [bullet.symbol for row in rows for bullet in row.query_children(MarkdownBullet)]
        # Another kind of block, or the bullets shown changed (item 10 widens every number): anew.
        if type(block) is not type(self) or not rows or len(symbols) < len(rows) or shown != symbols[: len(rows)]:
            await replace(self, block)
            return
        self._copy_context(block)
        items = [item for item in block._blocks if isinstance(item, MarkdownListItem)]
        await update_blocks(rows[-1].query_children(Vertical).first(), items[len(rows) - 1]._blocks)
        for item, symbol in zip(items[len(rows) :], symbols[len(rows) :], strict=True):
            bullet = MarkdownBullet()
            bullet.symbol = symbol
            await self.mount(Horizontal(bullet, Vertical(*item._blocks)))


# Textual's class first: a widget takes the CSS of its first base only, and of that base's first.
class BulletListInPlace(MarkdownBulletList, ListInPlace):
    pass


class OrderedListInPlace(MarkdownOrderedList, ListInPlace):
    pass


LISTS = (BulletListInPlace, OrderedListInPlace)
IN_PLACE: dict[str, type[MarkdownBlock]] = {
    "paragraph_open": ParagraphInPlace,
    "fence": FenceInPlace,
    "code_block": FenceInPlace,
    "blockquote_open": QuoteInPlace,
    "bullet_list_open": BulletListInPlace,
    "ordered_list_open": OrderedListInPlace,
}
