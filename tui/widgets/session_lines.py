"""The lines above the chat screen's panes: what the session is (lineup, schedule, where its
transcript goes), its settings, its scenario, and, while the transcript cannot be written,
why and what to do.

On a short screen (under `SHORT_SCREEN_ROWS` rows) the title, settings and scenario lines fold
into one, so that the replies get the rows; a key (`toggle`) shows them all until pressed again."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from tui.blind import title_note
from tui.session import Session
from tui.textsafe import safe_text
from tui.transcript import TranscriptWriter


def where_saved(path: Path | None) -> str:
    """The transcript's path as a person reads it: relative to here, or with ~ for home."""
    if path is None:
        return "saved from the first turn"
    if path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return str(path).replace(str(Path.home()), "~", 1)


def saving_state(writer: TranscriptWriter) -> str:
    """Whether the transcript is being saved, in a word or two: the folded line's version of `where_saved`."""
    if writer.failure is not None:
        return "⚠ not saved"
    return "saved" if writer.path is not None else "saved from turn 1"


def schedule_note(session: Session) -> str | None:
    """What the engine's schedule runs now and why, e.g. `auto → mixed (predicted 0.88× baton, …)`.
    Local models carry their engine's note (they share one engine); remote ones have none."""
    return next((note for model in session.models if (note := getattr(model, "schedule_note", None))), None)


# Below this many rows, the five lines above the panes would leave a pane under a dozen lines
# of text (six at 80×24): they fold into one.
SHORT_SCREEN_ROWS = 30
FOLD_KEY = "F12"  # F10 would be simpler, but GNOME Terminal and Xfce Terminal open their menu with it


class SessionLines(Vertical):
    # How often the title looks for a new schedule note: `auto` chooses when a turn starts, in the
    # engine, which sends the app no message.
    SCHEDULE_CHECK_S = 0.5

    def __init__(self) -> None:
        super().__init__(id="session-lines")
        self.saving_failed = False  # the saving line is shown
        self.session: Session | None = None
        self.short = False  # the screen has fewer than SHORT_SCREEN_ROWS rows
        self.unfolded = False  # on a short screen, the person asked to see every line
        self._title = Text()
        self._folded = Text()

    @property
    def folded(self) -> bool:
        return self.short and not self.unfolded

    def compose(self) -> ComposeResult:
        with Horizontal(id="folded-line"):
            yield Static(id="folded-summary")
            yield Static(Text(f" {FOLD_KEY} more", style="dim"), id="folded-key")
        yield Static(id="title")
        yield Static(id="settings-line")
        yield Static(id="scenario-line")
        yield Static(id="saving-line")

    def on_mount(self) -> None:
        self.set_interval(self.SCHEDULE_CHECK_S, self.show_title)

    def fit(self, screen_rows: int) -> None:
        """Fold the lines into one if the screen is short (the chat screen calls this when resized)."""
        self.short = screen_rows < SHORT_SCREEN_ROWS
        self.show_fold()

    def toggle(self) -> None:
        """On a short screen, show every line, or fold them again."""
        if not self.short:
            self.notify(f"Every line is shown: they fold into one on screens under {SHORT_SCREEN_ROWS} rows")
            return
        self.unfolded = not self.unfolded
        self.show_fold()

    def show_fold(self) -> None:
        """Show either the folded line or the lines it stands for."""
        folded = self.folded
        self.query_one("#folded-line").display = folded
        for line_id in ("#title", "#settings-line"):
            self.query_one(line_id).display = not folded
        has_scenario = self.session is not None and self.session.scenario is not None
        self.query_one("#scenario-line").display = has_scenario and not folded

    def show(self, session: Session) -> None:
        self.session = session
        self.show_fold()
        self.show_title()
        params = session.params
        system = session.conversation.system.replace("\n", " ") or "(none)"
        seed = "random" if params.seed is None else params.seed
        settings = (
            f"system: {system[:60]}{'…' if len(system) > 60 else ''} · temp {params.temperature} · "
            f"top-p {params.top_p} · top-k {params.top_k} · min-p {params.min_p} · "
            f"repeat {params.repeat_penalty} · max {params.max_tokens} · seed {seed}"
        )
        self.query_one("#settings-line", Static).update(Text(safe_text(settings), style="dim"))
        scenario = session.scenario
        line = self.query_one("#scenario-line", Static)
        if scenario is not None:
            keys = " · F7 next item" if scenario.has_items else ""
            line.update(Text.assemble((f"{scenario.title}{keys} · ", "bold"), (scenario.description, "italic")))
        self.show_saving(session.transcript)

    def show_title(self) -> None:
        """The title line and the folded line, redrawn only when they changed (a timer asks twice a second)."""
        session = self.session
        if session is None:
            return
        info = session.engine_info
        title = Text.assemble(("Ladder", "bold"), f" · {session.lineup or 'custom lineup'}")
        remote = sum(1 for model in session.models if model.card.endpoint)
        if remote:  # beside the lineup, from --endpoint, or a lineup's remote cards
            title.append(f" · {remote} remote")
        if session.replay_of:
            title.append(f" · replay of {session.replay_of}", style="bold")
        title.append(title_note(session.blind, session.guess_score))
        if info:
            title.append(f" · {schedule_note(session) or info.get('schedule')}, {info.get('cores')} cores", style="dim")
        title.append(f" · {where_saved(session.transcript.path)}", style="dim")
        if title != self._title:
            self._title = title
            self.query_one("#title", Static).update(title)
        folded = self.folded_summary(session)
        if folded != self._folded:
            self._folded = folded
            self.query_one("#folded-summary", Static).update(folded)

    def folded_summary(self, session: Session) -> Text:
        """The essentials of the folded lines: what the session is and whether it is saved."""
        summary = Text.assemble(("Ladder", "bold"), f" · {session.lineup or 'custom lineup'}")
        if session.replay_of:
            summary.append(f" · replay of {session.replay_of}", style="bold")
        summary.append(title_note(session.blind, session.guess_score))
        if session.scenario is not None:
            summary.append(f" · {session.scenario.title}")
        summary.append(f" · {saving_state(session.transcript)}", style="dim")
        return summary

    def show_saving(self, writer: TranscriptWriter) -> None:
        """Show, while the transcript cannot be written, that saving stopped, why, and what to do;
        say so once it works again."""
        line = self.query_one("#saving-line", Static)
        if writer.failure is not None:
            problem = (
                f"⚠ Saving stopped: {writer.failure} · {len(writer.pending)} event(s) kept in memory · "
                "Ctrl+S saves elsewhere · Ctrl+R retries"
            )
            line.update(Text(safe_text(problem)))
        elif self.saving_failed:
            self.notify(f"Saving again: every turn so far is in {writer.path}", timeout=8, markup=False)
        line.display = self.saving_failed = writer.failure is not None
