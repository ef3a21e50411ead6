"""The leaderboard screen: the table of `ladder leaderboard`, counted from the saved sessions
(in a thread: it reads every transcript). `a` switches between blind votes only and every vote
and best mark; `m` writes the table as Markdown next to the sessions and says where."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from tui import paths
from tui.archive import write_output
from tui.leaderboard import Leaderboard, leaderboard, markdown, method
from tui.widgets.session_lines import where_saved

LEFT_ALIGNED = {"model"}


def export_path(folder: Path) -> Path:
    """A new file for the export: `leaderboard-YYYYMMDD-HHMMSS.md`, `-2`, `-3`… when that second is taken."""
    return paths.new_file(folder, f"leaderboard-{datetime.now():%Y%m%d-%H%M%S}", ".md")


class LeaderboardScreen(Screen[None]):
    DEFAULT_CSS = """
    LeaderboardScreen #leaderboard-title { height: auto; padding: 0 1; text-style: bold; }
    LeaderboardScreen #leaderboard-table { height: auto; max-height: 75%; margin: 1 0; }
    LeaderboardScreen #leaderboard-notes { height: auto; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "switch_votes", "Blind only / all votes"),
        Binding("m", "export_markdown", "Export Markdown"),
    ]

    def __init__(self, sessions_dir: Path) -> None:
        super().__init__()
        self.sessions_dir = sessions_dir
        self.include_all = False  # blind votes only, as `ladder leaderboard` without --all
        self.board: Leaderboard | None = None  # the table shown; None while counting, or if the folder failed
        self.counting = False

    def compose(self) -> ComposeResult:
        yield Static(id="leaderboard-title")
        yield DataTable[Text](id="leaderboard-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="leaderboard-notes")
        yield Footer()

    def on_mount(self) -> None:
        self.count()

    def count(self) -> None:
        self.board, self.counting = None, True
        self.query_one("#leaderboard-title", Static).update(Text("Leaderboard · counting the votes…"))
        self.read_sessions(self.include_all)

    @work(thread=True, exclusive=True, group="leaderboard")
    def read_sessions(self, include_all: bool) -> None:
        try:
            board: Leaderboard | str = leaderboard(self.sessions_dir, include_all=include_all)
        except ValueError as error:  # the sessions folder cannot be read
            board = str(error)
        if not get_current_worker().is_cancelled:  # else `a` was pressed again: a newer count is on its way
            self.app.call_from_thread(self.show, board)

    def show(self, board: Leaderboard | str) -> None:
        """The table, or one line saying why there is none (`board` is that line when the folder cannot be read)."""
        self.board, self.counting = board if isinstance(board, Leaderboard) else None, False
        reason = board if isinstance(board, str) else board.empty_reason()
        title, notes = self.query_one("#leaderboard-title", Static), self.query_one("#leaderboard-notes", Static)
        table = self.query_one("#leaderboard-table", DataTable)
        table.clear(columns=True)
        table.display = reason is None
        if reason is not None or isinstance(board, str):
            title.update(Text(f"Leaderboard · {reason}"))
            notes.update(Text("a: blind votes only / every vote and best mark · Esc: back", style="dim"))
            return
        title.update(Text(f"Leaderboard · {board.summary()}"))
        header, *rows = board.rows()
        for name in header:
            table.add_column(self.cell(name, name), key=name)
        for row in rows:
            table.add_row(*(self.cell(name, text) for name, text in zip(header, row, strict=True)))
        notes.update(Text("\n".join([*board.notes(), method()]), style="dim"))

    @staticmethod
    def cell(column: str, text: str) -> Text:
        return Text(text, justify="left" if column in LEFT_ALIGNED else "right")

    def action_switch_votes(self) -> None:
        self.include_all = not self.include_all
        self.count()

    def action_export_markdown(self) -> None:
        if self.counting:
            self.notify("Still counting the votes; export once the table is shown", severity="warning")
            return
        if self.board is None:
            self.notify("Nothing to export: the sessions folder could not be read", severity="warning")
            return
        path = export_path(self.sessions_dir)
        try:
            self.sessions_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_output(path, markdown(self.board))
        except OSError as error:
            message = f"Cannot write {where_saved(path)}: {error.strerror or error}"
            self.notify(message, title="Not exported", severity="error", markup=False)
            return
        self.notify(f"The leaderboard (Markdown) saved in {where_saved(path)}", title="Exported", markup=False)

    def palette_commands(self) -> list[SystemCommand]:
        """The screen's keys in the command palette (see `LadderApp.get_system_commands`)."""
        return [
            SystemCommand(
                str(binding.description),
                f"{binding.description} ({binding.key})",
                lambda action=binding.action: self.run_action(action),
            )
            for binding in self.BINDINGS
            if isinstance(binding, Binding)
        ]
