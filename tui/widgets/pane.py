"""One model's pane: a header saying what the model is and what it is doing, its replies
turn by turn, and a footer with the last reply's numbers.

The chat screen drives a pane with `begin` and `apply` (one call per event of a reply);
what the pane shows follows from its reactive fields. Everything but the reply itself is
shown as `Text`, never as a markup string: names, finish reasons, errors and notes come
from GGUF files and saved transcripts, and Textual would read "[/x]" in them as markup
(and fail) or "[@click=…]" as an action."""

from __future__ import annotations

import time
from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from tui.cards import ModelCard
from tui.checks import CheckResult, Score
from tui.engine.events import Finished, FirstToken, PromptReady, TextPiece, TurnEvent
from tui.history import Reply
from tui.labels import params_label, reply_stats, size_label, tokens_label
from tui.pacing import Pacer
from tui.session import Checked
from tui.textsafe import safe_text
from tui.widgets.reply import ReplyText

PaneState = Literal["waiting", "fetching", "loading", "ready", "thinking", "streaming", "done", "cancelled", "error"]
STATES: dict[PaneState, str] = {
    "waiting": "◌ waiting",
    "fetching": "⇣ fetching",
    "loading": "◌ loading",
    "ready": "● ready",
    "thinking": "… thinking",
    "streaming": "▶ streaming",
    "done": "✓ done",
    "cancelled": "⊘ cancelled",
    "error": "✗ error",
}
ANSWERING: tuple[PaneState, ...] = ("thinking", "streaming")
NOT_LOADED: tuple[PaneState, ...] = ("waiting", "fetching", "loading", "error")  # no model to answer (yet)


class TurnView(Vertical):
    """One user turn and this model's reply to it.

    Streamed text is held by a `Pacer` and shown a little at a time by `flush`, which the
    chat screen calls for every pane at once, ten times a second (or less often, when the
    app nears its CPU budget): every pane changes in the same frame, and at every frame.
    """

    # No empty line for the numbers while the reply streams: the reply keeps room below its text.
    DEFAULT_CSS = """
    TurnView .reply-stats.-empty { display: none; }
    """

    def __init__(self, turn: int, prompt: str) -> None:
        super().__init__(id=f"turn-{turn}", classes="turn")
        self.turn = turn
        self.prompt = prompt
        self.reply = ReplyText(classes="reply")
        self.stats = Static("", classes="reply-stats -empty")
        self.pacer = Pacer()

    def compose(self) -> ComposeResult:
        yield Static(Text(f"▶ {self.prompt}", no_wrap=False), classes="prompt", markup=False)
        yield self.reply
        yield self.stats

    def write(self, text: str) -> None:
        self.pacer.add(text)

    def flush(self) -> bool:
        """Show the next part of the text held; whether the reply grew past its room on screen."""
        return self.reply.append(safe_text(self.pacer.take(time.perf_counter())))

    def finish(self, done: Finished) -> None:
        self.reply.append(safe_text(self.pacer.take_all()))
        self.reply.end()
        for notice in done.notices:
            self.mount(Static(Text(f"ⓘ {safe_text(notice)}"), classes="notice"), before=self.stats)
        if done.error:
            self.mount(Static(Text(f"✗ {safe_text(done.error)}"), classes="error"), before=self.stats)
        self.show_stats(Text(safe_text(" · ".join(reply_stats(done)))))
        self.set_class(done.status != "done", f"-{done.status}")

    def show_stats(self, text: Text) -> None:
        self.stats.update(text)
        self.stats.remove_class("-empty")

    def show_marks(self, best: bool, notes: list[str]) -> None:
        """★ for a reply marked best, and any notes on it (review and resume)."""
        for old in self.query(".mark"):
            old.remove()
        lines = (["★ best"] if best else []) + [f"✎ {safe_text(note)}" for note in notes]
        if lines:
            self.mount(Static(Text("\n".join(lines), style="bold yellow"), classes="mark"), after=self.stats)

    def show_check(self, result: CheckResult) -> None:
        mark = Text(
            f"{'✓' if result.passed else '✗'} {safe_text(result.reason)}",
            style="bold green" if result.passed else "bold red",
        )
        self.mount(Static(mark, classes="check"), before=self.stats)


class ModelPane(Vertical):
    """The pane of one model: the chat screen starts a reply with `begin` and shows its
    events with `apply`; saved replies are shown with `show_saved`."""

    state: reactive[PaneState] = reactive("waiting")
    progress: reactive[str] = reactive("")  # of fetching or loading the model, e.g. "40%"
    context: reactive[tuple[int, int]] = reactive((0, 0))  # tokens in the model's context, of its size
    overrides: reactive[str] = reactive("")  # per-model sampling parameters, shown in the header
    score: reactive[Score | None] = reactive(None, always_update=True)  # in a scenario with checks; changes in place
    letter: reactive[str] = reactive("")  # in a blind session, the pane's letter: "A" is "Model A"
    hidden: reactive[bool] = reactive(False)  # blind, before the reveal: what would tell the model apart is hidden

    # While hidden, a reply's numbers (speed, time to first token) and its notices and errors (which may
    # name the model or its context size) are out of sight; the reveal shows them.
    DEFAULT_CSS = """
    ModelPane.-hidden {
        .reply-stats, .notice, .error { display: none; }
    }
    """

    def __init__(self, card: ModelCard, original: bool = False) -> None:
        super().__init__(classes="pane")
        self.card = card
        self.original = original  # a replay's saved replies, shown read-only beside the live models
        self.header = Static("", classes="pane-header")
        self.turns = VerticalScroll(classes="turns")
        self.footer = Static("", classes="pane-footer")
        self.set_reactive(ModelPane.context, (0, card.context))  # the card's size until the model says
        self.live_tokens = 0
        self.live_started = 0.0
        self.last: Finished | None = None  # the last reply's numbers, shown in the footer
        self.at_end = True  # the view shows the newest text, so new text is scrolled into view
        self.reply_view: TurnView | None = None  # the turn and reply begun last
        self.streaming: TurnView | None = None  # the reply being written, if any

    def compose(self) -> ComposeResult:
        yield self.header
        yield self.turns
        yield self.footer

    def on_mount(self) -> None:
        self.refresh_header()
        self.refresh_footer()

    def watch_state(self) -> None:
        for state in STATES:
            self.set_class(state == self.state, f"-{state}")
        self.refresh_header()
        self.refresh_footer()

    def watch_progress(self) -> None:
        self.refresh_header()

    def watch_overrides(self) -> None:
        self.refresh_header()

    def watch_score(self) -> None:
        self.refresh_header()

    def watch_letter(self) -> None:
        self.refresh_header()

    def watch_hidden(self) -> None:
        self.set_class(self.hidden, "-hidden")
        self.refresh_header()
        self.refresh_footer()

    @property
    def label(self) -> str:
        """The model's name as shown: "Model A" while hidden."""
        return f"Model {self.letter}" if self.hidden else self.card.name

    @property
    def short_label(self) -> str:
        """The pane in the switcher line: "1.5B Qwen2.5" ("A 1.5B Qwen2.5" once revealed), "Model A" while hidden."""
        if self.hidden:
            return self.label
        letter = f"{self.letter} " if self.letter else ""
        return f"{letter}{params_label(self.card.params)} {self.card.name.split(' ')[0]}"

    @property
    def place(self) -> tuple[bool, bool, str, tuple[int, int]]:
        """The pane's place among others: live models before a replay's originals, then by letter in a
        blind session (its shuffled order), else by size."""
        return (self.original, self.letter == "", self.letter, self.card.order)

    def watch_context(self) -> None:
        self.refresh_footer()

    def refresh_header(self) -> None:
        card = self.card
        if self.hidden:  # a blind session before the reveal: nothing that tells the models apart
            name, facts = self.label, "hidden until the reveal (Ctrl+N)"
        else:
            name = f"{self.letter} · {card.name}" if self.letter else card.name
            where = f"served by {card.endpoint.host}" if card.endpoint else f"{size_label(card.size)} · {card.family}"
            facts = safe_text(f"{params_label(card.params)} · {card.quant} · {where}")
            if not card.instruct and "base" not in card.name.lower():
                facts += " · base model"
        title = Text(("⟲ original: " if self.original else "") + safe_text(name), style="bold")
        # While hidden, no loading percentage: the largest file is the slowest to load.
        state = STATES[self.state] + (f" {self.progress}" if self.progress and not self.hidden else "")
        if self.score is not None:
            state += f" · score {self.score}"
        lines = Text.assemble(title, "\n", (facts, "dim"), "\n", (state, "bold"))
        if self.overrides and not self.hidden:
            lines.append(f"  {safe_text(self.overrides)}", style="italic")
        self.header.update(lines)

    def refresh_footer(self) -> None:
        used, size = self.context
        parts = []
        if self.hidden:  # no speed, time to first token or context size: they tell the models apart
            if self.state in ANSWERING:
                parts.append(f"{self.live_tokens} tok")
            elif self.last is not None:
                parts += reply_stats(self.last)[:2]  # how it ended, and its tokens
            self.footer.update(Text(" · ".join(parts) or "numbers hidden until the reveal"), layout=False)
            return
        if self.state in ANSWERING:
            parts.append(f"{self.live_tokens} tok")
            elapsed = time.perf_counter() - self.live_started
            if self.live_tokens > 1 and elapsed > 0:
                parts.append(f"{(self.live_tokens - 1) / elapsed:.1f} t/s")
        elif self.last is not None:
            if self.last.ttft_s is not None:
                parts.append(f"TTFT {self.last.ttft_s:.2f}s")
            if self.last.tokens_per_s:
                parts.append(f"{self.last.tokens_per_s:.1f} t/s")
            parts.append(tokens_label(self.last))
        # A remote server that reports no usage leaves what its context holds unknown.
        parts.append(f"ctx {'?' if self.card.endpoint and not used else used}/{size}")
        self.footer.update(Text(" · ".join(parts)), layout=False)

    # --- the model's life: loading, then replies ----------------------------------------------

    def show_ready(self, context: tuple[int, int]) -> None:
        """The model is loaded: `context` is its (tokens held, context size)."""
        self.progress = ""
        self.context = context
        self.state = "ready"

    def show_error(self, message: str) -> None:
        self.progress = ""
        self.state = "error"
        self.turns.mount(Static(Text(f"✗ {safe_text(message)}"), classes="error"))

    def turn_view(self, turn: int) -> TurnView | None:
        found = self.turns.query(f"#turn-{turn}")
        return found.first(TurnView) if found else None

    async def begin(self, turn: int, prompt: str) -> None:
        """A reply to user turn `turn` starts; `apply` shows its events."""
        view = TurnView(turn, safe_text(prompt))
        await self.turns.mount(view)
        self.live_tokens, self.live_started = 0, time.perf_counter()
        self.reply_view = self.streaming = view
        self.state = "thinking"
        self.keep_end_in_view()

    async def apply(self, event: TurnEvent | Checked) -> None:
        """Show one event of the reply begun last. Text is buffered until the next `flush`;
        a notice is for the screen to show (it says so in a toast)."""
        view = self.reply_view
        assert view is not None, "apply() before begin()"
        if isinstance(event, PromptReady):
            self.context = (event.prompt_tokens, self.context[1])
        elif isinstance(event, FirstToken):
            self.live_started = time.perf_counter()
            self.state = "streaming"
        elif isinstance(event, TextPiece):
            self.live_tokens += event.tokens
            view.write(event.text)
        elif isinstance(event, Finished):
            self.streaming = None
            view.finish(event)
            self.keep_end_in_view()
            self.last = event
            self.state = event.status
        elif isinstance(event, Checked):
            view.show_check(event.result)
            self.score = event.score
            self.keep_end_in_view()

    async def drop_reply(self) -> None:
        """Take away the reply begun last: it belongs to a session since left (F4, F6)."""
        view, self.reply_view = self.reply_view, None
        if self.streaming is view:
            self.streaming = None
        if view is not None and view.is_attached:  # mounted after the panes were cleared
            await view.remove()
        if self.state in ANSWERING:
            self.state = "ready"
        self.keep_end_in_view()  # no longer anchored

    def flush(self) -> bool:
        """Show the next part of the streamed text (called up to ten times a second); whether the reply
        outgrew its room on screen (the screen is laid out)."""
        if self.streaming is not None and self.streaming.flush():
            self.keep_end_in_view()  # only when the screen is laid out: the text is in view until then
            return True
        return False

    def make_room(self) -> None:
        """Give the reply being written new room below its text, in the layout another pane asked for."""
        if self.streaming is not None:
            self.streaming.reply.refresh(layout=True)

    # --- scrolling ------------------------------------------------------------------------------

    def keep_end_in_view(self) -> None:
        """Scroll new text into view, unless the user has scrolled up to read. While a reply
        streams past the bottom, the view is anchored: it follows its end as the screen is laid
        out, in the same frame (scrolling after the refresh draws every pane that grew twice).
        Only then: anchored, text shorter than the view would be pushed down to its bottom.
        Scrolling up releases the anchor; Textual anchors it again back at the end."""
        turns = self.turns
        if (anchored := self.at_end and self.streaming is not None and turns.max_scroll_y > 0) != turns.is_anchored:
            turns.anchor(anchored)
        if self.at_end and not anchored:
            turns.call_after_refresh(turns.scroll_end, animate=False, immediate=True)

    def scrolled(self) -> None:
        """The view moved: new text is scrolled into view again only once it is back at the end."""
        self.at_end = self.turns.scroll_y >= self.turns.max_scroll_y - 1

    # --- saved sessions and starting over -------------------------------------------------------

    async def show_saved(self, turn: int, prompt: str, reply: Reply | None) -> None:
        """A turn from a saved session: its reply, numbers, check and marks as recorded."""
        view = TurnView(turn, safe_text(prompt))
        await self.turns.mount(view)
        if reply is None:
            view.show_stats(Text("(no reply to this turn)", style="dim"))
            return
        done = reply.finished()
        view.write(done.text)
        view.finish(done)
        result = reply.check_result()
        if result:
            view.show_check(result)
        view.show_marks(reply.best, reply.notes)
        self.last = done
        self.refresh_footer()

    async def clear(self) -> None:
        """Empty the pane for a new session: a model that had been answering is ready again."""
        await self.turns.remove_children()
        self.last = None
        self.score = None
        self.context = (0, self.context[1])
        if self.state not in NOT_LOADED:
            self.state = "ready"
        self.refresh_footer()
