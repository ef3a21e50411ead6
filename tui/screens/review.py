"""A saved session, read-only, in the same side-by-side layout: every turn with each
model's reply, its numbers and check. Mark a reply best or note on it (saved as
appended events); resume the session, or replay its turns to other models.

What the transcript says (its name, models, scenario, notes, problems) is shown as
`Text` or with `markup=False`: never read as Textual markup."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, Static

from tui.cards import Catalog, ModelCard, card_from_record
from tui.history import SessionRecord, load_record
from tui.screens.diff import diff_in_review
from tui.screens.messages import ResumeRequested, choose_replay
from tui.screens.probs import probs_in_review
from tui.textsafe import safe_text
from tui.transcript import append_event
from tui.widgets.grid import PaneGrid, PaneKeys
from tui.widgets.pane import ModelPane


class NoteScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, about: str) -> None:
        super().__init__()
        self.about = about

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text.assemble(("Note", "bold"), f" on {safe_text(self.about)} · Enter saves"))
            yield Input(id="note")

    @on(Input.Submitted)
    def save(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReviewScreen(PaneKeys, Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("b", "mark_best", "Best"),
        Binding("n", "note", "Note"),
        Binding("d", "diff", "Diff"),
        Binding("t,ctrl+t", "token_probs", "Token probs"),
        Binding("left_square_bracket", "turn(-1)", "◀ Turn"),
        Binding("right_square_bracket", "turn(1)", "Turn ▶"),
        Binding("left", "step(-1)", "◀ Pane", show=False),  # nothing here to type in: plain arrows switch panes
        Binding("right", "step(1)", "Pane ▶", show=False),
        *PaneKeys.PANE_BINDINGS,
        Binding("ctrl+r", "resume", "Resume"),
        Binding("ctrl+y", "replay", "Replay"),
    ]

    def __init__(self, record: SessionRecord, catalog: Catalog, current: list[ModelCard]) -> None:
        super().__init__()
        self.record = record
        self.catalog = catalog  # the cards a replay may use
        self.current = current  # the cards of the session open now, offered for a replay
        self.grid = PaneGrid()
        self.turn = 1

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Static(id="settings-line")
        yield self.grid
        yield Footer()

    async def on_mount(self) -> None:
        record = self.record
        scores = record.scores()
        for card in record.models:
            pane = ModelPane(card_from_record(card))
            await self.grid.add(str(card.get("id")), pane)
            for turn in record.turns:
                await pane.show_saved(turn.number, turn.text, turn.replies.get(str(card.get("id"))))
            pane.state = "done"
            pane.score = scores.get(str(card.get("id")))
        scenario = record.header.get("scenario") or {}
        title = f" · {len(record.turns)} turns · {record.created[:16].replace('T', ' ')}"
        if isinstance(scenario, dict) and scenario.get("title"):
            title += f" · {scenario['title']}"
        if record.header.get("replay_of"):
            title += f" · replay of {record.header['replay_of']}"
        self.query_one("#title", Static).update(
            Text.assemble(("Ladder", "bold"), " · review · ", (safe_text(record.id), "bold"), safe_text(title))
        )
        settings = record.settings
        system = str(settings.get("system") or "(none)").replace("\n", " ")
        params = settings.get("params") or {}
        line = f"system: {system[:80]} · " + " · ".join(f"{k} {v}" for k, v in params.items())
        self.query_one("#settings-line", Static).update(Text(safe_text(line), style="dim"))
        for problem in record.problems:
            self.notify(
                problem, title="Part of this transcript could not be read", severity="warning", timeout=8, markup=False
            )

    # --- moving around -----------------------------------------------------------------------

    def action_turn(self, by: int) -> None:
        pane = self.grid.current_pane()
        current = (self.grid.top_turn(pane) if pane else None) or self.turn
        self.turn = max(1, min(len(self.record.turns), current + by))
        self.grid.scroll_to_turn(self.turn)

    # --- marks and notes, appended to the transcript --------------------------------------------

    def target(self) -> tuple[ModelPane, int] | None:
        pane = self.grid.current_pane()
        if pane is None:
            return None
        turn = self.grid.top_turn(pane) or self.turn
        return pane, turn

    def action_mark_best(self) -> None:
        target = self.target()
        if target is None:
            return
        pane, turn = target
        reply = self.record.turns[turn - 1].replies.get(pane.card.id) if turn <= len(self.record.turns) else None
        if reply is None:
            self.notify(f"{pane.card.name} has no reply to turn {turn}", severity="warning", markup=False)
            return
        append_event(self.record.path, {"type": "mark", "turn": turn, "model": pane.card.id, "best": not reply.best})
        self.reload(pane, turn)

    def action_note(self) -> None:
        target = self.target()
        if target is None:
            return
        pane, turn = target

        def save(text: str | None) -> None:
            if text:
                append_event(self.record.path, {"type": "note", "turn": turn, "model": pane.card.id, "text": text})
                self.reload(pane, turn)

        self.app.push_screen(NoteScreen(f"{pane.card.name}'s reply to turn {turn}"), save)

    def reload(self, pane: ModelPane, turn: int) -> None:
        self.record = load_record(self.record.path)
        reply = self.record.turns[turn - 1].replies.get(pane.card.id)
        view = pane.turn_view(turn)
        if reply is not None and view is not None:
            view.show_marks(reply.best, reply.notes)

    def action_diff(self) -> None:
        target = self.target()
        diff_in_review(self, self.grid, self.record, target[1] if target else None)

    def action_token_probs(self) -> None:
        target = self.target()
        probs_in_review(self, self.grid, self.record, target[1] if target else None)

    # --- leaving: resume or replay -------------------------------------------------------------

    def action_resume(self) -> None:
        self.post_message(ResumeRequested(self.record))

    def action_replay(self) -> None:
        choose_replay(self, self.record, self.catalog, self.current)
