"""Saved sessions, newest first, with a search box: text across every prompt and reply,
and filters `model:` `scenario:` `since:` `until:`. Enter opens one side by side.

The list is searched in a thread as the user types, so a quick ↓ Enter can come before
the list for the typed query is shown: opening, resuming or replaying then waits for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tui import archive
from tui.cards import Catalog, ModelCard
from tui.history import SessionRecord, load_record
from tui.screens.messages import ResumeRequested, choose_replay
from tui.screens.review import ReviewScreen
from tui.textsafe import safe_text

FILTERS = ("model", "scenario", "since", "until")
Row = tuple[archive.SessionSummary, list[str]]  # a session, and the snippets of it that match the search


def parse_query(query: str) -> tuple[str | None, dict[str, str]]:
    """ "word model:qwen since:2026-11-01" -> ("word", {"model": "qwen", "since": "2026-11-01"})."""
    words, filters = [], {}
    for token in query.split():
        key, sep, value = token.partition(":")
        if sep and key in FILTERS and value:
            filters[key] = value
        else:
            words.append(token)
    return " ".join(words) or None, filters


class SessionTable(DataTable[Text]):
    """The list of sessions. Enter on it while it is still empty (before the first list or
    the first search result is in) is passed on, where DataTable would drop it."""

    class EnterOnEmpty(Message):
        pass

    def action_select_cursor(self) -> None:
        if self.row_count:
            super().action_select_cursor()
        else:
            self.post_message(self.EnterOnEmpty())


class SessionsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("down", "to_list", "List", show=False),
        Binding("enter", "open", "Open", show=True),
        Binding("ctrl+r", "resume", "Resume"),
        Binding("ctrl+y", "replay", "Replay"),
        Binding("ctrl+f", "focus_search", "Search"),
    ]

    def __init__(self, directory: Path, catalog: Catalog, current: list[ModelCard]) -> None:
        super().__init__()
        self.directory = directory  # the sessions folder
        self.catalog = catalog  # the cards a replay may use
        self.current = current  # the cards of the session open now, offered for a replay
        self.ids: list[str] = []
        self.snippets: dict[str, list[str]] = {}
        self.listed: str | None = None  # the query the rows on screen answer; None before the first list
        self.after_listing: Callable[[], Awaitable[None] | None] | None = None  # asked for before the list came

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Input(
            placeholder="search prompts and replies · model:NAME scenario:ID since:YYYY-MM-DD until:YYYY-MM-DD",
            id="query",
        )
        yield SessionTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("date", "scenario", "lineup", "turns", "first prompt")
        self.refresh_list("")
        self.query_one("#query", Input).focus()  # typing searches at once; Enter or ↓ goes to the list

    @on(Input.Changed, "#query")
    def query_changed(self, event: Input.Changed) -> None:
        self.refresh_list(event.value)

    @on(Input.Submitted, "#query")
    def query_done(self) -> None:
        self.focus_list()

    @work(exclusive=True, thread=True)
    def refresh_list(self, query: str) -> None:
        text, filters = parse_query(query)
        try:
            if text or filters:
                hits = archive.search(
                    self.directory,
                    text,
                    model=filters.get("model"),
                    scenario=filters.get("scenario"),
                    since=filters.get("since"),
                    until=filters.get("until"),
                )
                rows: list[Row] = [
                    (hit.summary, [f"turn {s.turn} · {s.who}: {s.text}" for s in hit.snippets]) for hit in hits
                ]
            else:
                rows = [(summary, []) for summary in archive.list_sessions(self.directory)]
        except ValueError as error:  # a bad date in since:/until:
            self.app.call_from_thread(self.show_problem, query, str(error))
            return
        self.app.call_from_thread(self.show_rows, query, rows)

    def show_problem(self, query: str, message: str) -> None:
        """A query that cannot be searched lists nothing, and says why."""
        if self.show_rows(query, []):
            self.query_one("#preview", Static).update(Text(safe_text(message), style="red"))

    def show_rows(self, query: str, rows: list[Row]) -> bool:
        """Show the rows found for `query`, unless the box holds another query by now (a
        cancelled search thread still delivers its result); whether they were shown."""
        if query != self.query_one("#query", Input).value:
            return False
        table = self.query_one(DataTable)
        table.clear()
        self.ids = []
        self.snippets = {}
        for summary, snippets in rows:
            prompt = summary.first_prompt.replace("\n", " ")
            cells = (
                str(summary.created)[:16].replace("T", " "),
                summary.scenario or "-",
                summary.lineup or "-",
                str(summary.turns),
                prompt[:80] + ("…" if len(prompt) > 80 else ""),
            )
            # Text, not str: a DataTable reads str cells as markup, and these come from files.
            table.add_row(*(Text(safe_text(cell)) for cell in cells), key=summary.id)
            self.ids.append(summary.id)
            self.snippets[summary.id] = snippets
        count = f"{len(rows)} session{'s' if len(rows) != 1 else ''}"
        keys = "  Enter opens · Ctrl+R resumes · Ctrl+Y replays"
        self.query_one("#title", Static).update(
            Text.assemble(("Sessions", "bold"), f" · {count} in {self.directory}", (keys, "dim"))
        )
        self.show_preview()
        self.listed = query
        if self.after_listing is not None:
            self.call_later(self.after_listing)
            self.after_listing = None
        return True

    def listing_pending(self, action: Callable[[], Awaitable[None] | None]) -> bool:
        """Whether the rows on screen are not yet those of the typed query; if so, `action`
        is carried out once they are (a quick ↓ Enter acts on the list the user asked for)."""
        if self.listed == self.query_one("#query", Input).value:
            return False
        self.after_listing = action
        return True

    @on(DataTable.RowHighlighted)
    def show_preview(self) -> None:
        session_id = self.selected()
        snippets = self.snippets.get(session_id or "", [])
        text = "\n".join(snippets) if snippets else (session_id or "no saved sessions here yet")
        self.query_one("#preview", Static).update(Text(safe_text(text), style="dim"))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.ids or table.cursor_row < 0 or table.cursor_row >= len(self.ids):
            return None
        return self.ids[table.cursor_row]

    def selected_record(self) -> SessionRecord | None:
        session_id = self.selected()
        if session_id is None:
            return None
        try:
            record = load_record(archive.resolve(self.directory, session_id))
        except ValueError as error:
            self.notify(str(error), severity="error", markup=False)
            return None
        for problem in record.problems:
            self.notify(
                problem, title="Part of this transcript could not be read", severity="warning", timeout=8, markup=False
            )
        return record

    @on(DataTable.RowSelected)
    @on(SessionTable.EnterOnEmpty)
    def action_open(self) -> None:
        if self.listing_pending(self.action_open):
            return
        record = self.selected_record()
        if record is not None:
            self.app.push_screen(ReviewScreen(record, self.catalog, self.current))

    def action_resume(self) -> None:
        if self.listing_pending(self.action_resume):
            return
        record = self.selected_record()
        if record is not None:
            self.post_message(ResumeRequested(record))

    def action_replay(self) -> None:
        if self.listing_pending(self.action_replay):
            return
        record = self.selected_record()
        if record is not None:
            choose_replay(self, record, self.catalog, self.current)

    def action_to_list(self) -> None:
        table = self.query_one(DataTable)
        if table.has_focus:
            table.action_cursor_down()
        else:
            self.focus_list()

    def focus_list(self) -> None:
        # At once, not as `focus()` does after the keys already queued: an Enter typed right
        # after ↓ is for the list, not the search box.
        self.set_focus(self.query_one(DataTable))

    def action_focus_search(self) -> None:
        self.query_one("#query", Input).focus()
