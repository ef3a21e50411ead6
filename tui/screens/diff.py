"""The diff view: the current pane's reply to a turn beside another pane's, with the words
only one of them has highlighted (tui/diff.py finds them). Opened from the chat screen
(Ctrl+D) and from review (d); ←/→ pick the other pane.

Replies are shown as written, not as Markdown, so line breaks and code read as the model
wrote them; model text goes through `safe_text` and is never read as markup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.diff import WordDiff, diff_words
from tui.history import Reply, SessionRecord
from tui.session import Session
from tui.textsafe import safe_text
from tui.widgets.grid import PaneGrid
from tui.widgets.pane import ModelPane

ONLY_HERE = "bold red strike"  # words only the current pane's reply has
ONLY_THERE = "bold green underline"  # words only the other pane's reply has


@dataclass(frozen=True)
class Side:
    """One pane's reply to the turn, as the view needs it."""

    name: str
    text: str
    status: str  # how the reply ended: done, cancelled or error; "missing" with no finished reply to the turn

    def problem(self, turn: int) -> str | None:
        """Why there is nothing of this reply to compare, if there is not."""
        if self.status == "missing":
            return f"{self.name} has no finished reply to turn {turn}"
        if not self.text.strip():
            how = {"cancelled": "was cancelled before any text", "error": "failed before any text"}
            return f"{self.name}'s reply to turn {turn} {how.get(self.status, 'is empty')}"
        return None


def word_count(count: int) -> str:
    return f"{count} word" if count == 1 else f"{count} words"


def summary(diff: WordDiff, here: Side, there: Side) -> str:
    """One line: how much the replies share and where they part, e.g.
    "87% the same words; first difference at word 12 · 14 words only in A, 9 only in B"."""
    if diff.identical:
        spacing = "" if here.text.strip() == there.text.strip() else " (spacing aside)"
        line = f"Identical{spacing}: the same {word_count(diff.words_a)}"
    else:
        only_here, only_there = diff.words_a - diff.same, diff.words_b - diff.same
        percent = min(round(100 * diff.ratio), 99)  # "100%" is for identical replies only
        line = (
            f"{percent}% the same words; first difference at word {diff.first_difference} · "
            f"{word_count(only_here)} only in {here.name}, {only_there} only in {there.name}"
        )
    ended = {"cancelled": "was cancelled", "error": "was cut short by an error"}
    for side in (here, there):
        if side.status in ended:
            line += f" · {side.name}'s reply {ended[side.status]}"
    return line


def highlighted(diff: WordDiff, side: Literal["a", "b"]) -> Text:
    """One reply with the words the other lacks highlighted (trailing whitespace left plain)."""
    only, style = ("delete", ONLY_HERE) if side == "a" else ("insert", ONLY_THERE)
    text = Text()
    for segment in diff.segments:
        part = safe_text(getattr(segment, side))
        if segment.kind == only:
            marked = part.rstrip()
            text.append(marked, style=style)
            text.append(part[len(marked) :])
        elif segment.kind == "equal":
            text.append(part)
    return text


class DiffScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,ctrl+d,d", "app.pop_screen", "Back"),
        Binding("left", "other(-1)", "◀ Other pane", priority=True),  # before the scrolling view's own
        Binding("right", "other(1)", "Other pane ▶", priority=True),
        Binding("alt+left", "other(-1)", "◀ Other pane", show=False),  # the chat's keys for the panes work too
        Binding("alt+right", "other(1)", "Other pane ▶", show=False),
    ]
    DEFAULT_CSS = """
    DiffScreen #diff-title, DiffScreen #diff-summary { height: auto; padding: 0 1; background: $panel; }
    DiffScreen #diff-body { height: 1fr; }
    DiffScreen #diff-columns { height: auto; }
    DiffScreen .diff-side { width: 1fr; padding: 0 1; }
    DiffScreen #diff-b { border-left: solid $panel-lighten-2; }
    """

    def __init__(self, turn: int, sides: list[Side], current: int) -> None:
        super().__init__()
        self.turn = turn
        self.sides = sides  # every pane's reply to the turn, in the panes' order
        self.current = current
        self.other = (current + 1) % len(sides)

    def compose(self) -> ComposeResult:
        yield Static(id="diff-title")
        yield Static(id="diff-summary")
        # One scroll for both columns: they move together.
        with VerticalScroll(id="diff-body"), Horizontal(id="diff-columns"):
            yield Static(id="diff-a", classes="diff-side")
            yield Static(id="diff-b", classes="diff-side")
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.query_one("#diff-body").focus()

    def action_other(self, by: int) -> None:
        """The next (or previous) pane other than the current one."""
        self.other = (self.other + by) % len(self.sides)
        if self.other == self.current:
            self.other = (self.other + by) % len(self.sides)
        self.show()

    def show(self) -> None:
        here, there = self.sides[self.current], self.sides[self.other]
        self.query_one("#diff-title", Static).update(
            Text.assemble(
                ("Diff", "bold"),
                f" · turn {self.turn} · ",
                (here.name, "bold red"),
                " ⟷ ",
                (there.name, "bold green"),
            )
        )
        problems = [problem for side in (here, there) if (problem := side.problem(self.turn))]
        if problems:
            line = "; ".join(problems) + ": nothing to compare"
            columns = [Text(safe_text(here.text)), Text(safe_text(there.text))]
        else:
            diff = diff_words(here.text, there.text)
            line = summary(diff, here, there)
            columns = [highlighted(diff, "a"), highlighted(diff, "b")]
        self.query_one("#diff-summary", Static).update(Text(line))
        for widget_id, side, column in (("#diff-a", here, columns[0]), ("#diff-b", there, columns[1])):
            heading = Text.assemble((side.name, "bold"), ("" if side.status == "done" else f" · {side.status}", "dim"))
            self.query_one(widget_id, Static).update(Text.assemble(heading, "\n\n", column))


# --- opening it from the chat screen and from review ---------------------------------------------------


def pane_name(pane: ModelPane) -> str:
    return safe_text(pane.label)  # "Model A" in a blind session before the reveal


def saved_side(pane: ModelPane, reply: Reply | None) -> Side:
    """A reply from a saved transcript (review, a replay's original panes)."""
    if reply is None:
        return Side(pane_name(pane), "", "missing")
    return Side(pane_name(pane), reply.text, reply.status if reply.status in ("done", "cancelled") else "error")


def live_side(pane: ModelPane, text: str | None, turn: int) -> Side:
    """A live pane's reply: the session holds its text once it has ended, the pane shows how it ended."""
    if text is None:
        return Side(pane_name(pane), "", "missing")
    view = pane.turn_view(turn)
    ended = next((how for how in ("cancelled", "error") if view is not None and view.has_class(f"-{how}")), "done")
    return Side(pane_name(pane), text, ended)


def open_diff(screen: Screen[None], grid: PaneGrid, turn: int, sides: list[Side]) -> None:
    if len(sides) < 2:
        screen.notify("Only one pane: a diff needs two replies to compare", severity="warning")
        return
    screen.app.push_screen(DiffScreen(turn, sides, min(grid.current, len(sides) - 1)))


def diff_in_chat(screen: Screen[None], grid: PaneGrid, session: Session, replay_of: SessionRecord | None) -> None:
    """The chat's current pane's reply beside the next pane's, to the turn the current pane
    shows: the latest while it shows the end, else the turn at its top."""
    shown = grid.current_turn(len(session.conversation.user_turns))
    if shown is None:
        screen.notify("No turn yet: send one, then Ctrl+D compares two panes' replies to it", severity="warning")
        return
    _, turn = shown
    sides = [
        saved_side(each, replay_of.reply(turn, each.card.id) if replay_of else None)  # a replay's original
        if each.original
        else live_side(each, session.conversation.replies.get(each.card.id, {}).get(turn), turn)
        for each in grid.ordered()
    ]
    open_diff(screen, grid, turn, sides)


def diff_in_review(screen: Screen[None], grid: PaneGrid, record: SessionRecord, turn: int | None) -> None:
    """Review's current pane's saved reply beside the next pane's, to `turn` (the one at the top of the pane)."""
    if turn is None or not record.turns:
        screen.notify("This session has no turns to compare", severity="warning")
        return
    replies = record.turns[min(turn, len(record.turns)) - 1].replies
    sides = [saved_side(pane, replies.get(pane.card.id)) for pane in grid.ordered()]
    open_diff(screen, grid, min(turn, len(record.turns)), sides)
