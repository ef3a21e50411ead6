"""The token probabilities view: one reply with each token coloured by the probability its model
gave it (four bands, with a legend), a cursor that shows a token's likeliest alternatives, and a
jump to the first place where another pane's reply to the same turn parts from this one, with both
models' probabilities there. Opened from the chat screen (Ctrl+T) and from review (t), for the
current pane's reply to the turn it shows.

The probabilities are the model's own: the softmax of its logits, before the repeat penalty and
the temperature change what is drawn (see `tui.engine.decode.TokenRecord`). Model text goes
through `safe_text` and is shown as `Text`, never read as markup."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.history import Reply, SessionRecord
from tui.session import Session
from tui.textsafe import safe_text
from tui.widgets.grid import PaneGrid
from tui.widgets.pane import ModelPane

Token = list[Any]  # [text, logprob, [[alternative's text, logprob], ...]], as `TokenRecord` makes it

# The bands a token's probability falls in, highest first: (lowest probability, label, style). Colours
# by number: the terminal's own yellow and orange can be one colour.
BANDS = (
    (0.9, "≥90%", "#5fd75f"),
    (0.5, "50–90%", "#e5d54a"),
    (0.2, "20–50%", "#ff8c1a"),
    (0.0, "<20%", "bold #ff4d4d"),
)
HOW_TO_RECORD = (
    'turn on "Record token probabilities" in Settings (F2), or start with `ladder --logprobs`; '
    "replies from then on are recorded"
)
BAR_WIDTH = 20


def band(probability: float) -> int:
    """The index in BANDS of the band `probability` falls in."""
    return next(index for index, (low, _, _) in enumerate(BANDS) if probability >= low)


def percent(probability: float) -> str:
    return f"{probability:.1%}" if probability >= 0.001 else "<0.1%"


def bar(share: float) -> str:
    """A bar BAR_WIDTH cells long for all, in eighths of a cell; at least a sliver for any share."""
    eighths = max(1, round(share * BAR_WIDTH * 8))
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def shown(text: str) -> str:
    """A token's text, quoted (in single quotes if it has a double one), with its whitespace visible."""
    quote = "'" if '"' in text else '"'
    return quote + safe_text(text).replace("\n", "↵").replace("\t", "⇥") + quote


@dataclass(frozen=True)
class ReplyProbs:
    """One pane's reply to the turn, as the view needs it."""

    name: str
    text: str | None  # None: no finished reply to the turn
    tokens: list[Token] | None  # None: not recorded with token probabilities


class Spans:
    """Where each token of a reply sits in its text. Tokens join into the reply as the model wrote
    it; a token that is a byte of a longer character has empty text, and is shown with the token
    that completes the character (its group)."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.starts: list[int] = []  # the offset of each token's text
        self.ends: list[int] = []
        offset = 0
        for text, _, _ in tokens:
            self.starts.append(offset)
            offset += len(text)
            self.ends.append(offset)
        self.text = "".join(text for text, _, _ in tokens)
        self.lead = len(self.text) - len(self.text.lstrip())  # a reply is shown from its first visible character

    def group(self, index: int) -> range:
        """The tokens shown together with token `index`: the bytes of one character and the token completing it."""
        end = index
        while end < len(self.tokens) - 1 and not self.tokens[end][0]:
            end += 1
        start = end
        while start > 0 and not self.tokens[start - 1][0]:
            start -= 1
        return range(start, end + 1)

    def token_at(self, position: int) -> int | None:
        """The first token of the group holding the character at `position`; None past the end."""
        index = bisect_right(self.ends, position)
        return self.group(index).start if index < len(self.tokens) else None

    def text_of(self, group: range) -> str:
        return "".join(self.tokens[index][0] for index in group)

    def logprob(self, group: range) -> float:
        """A group's log-probability: its tokens' together."""
        return float(sum(self.tokens[index][1] for index in group))


@dataclass(frozen=True)
class Divergence:
    """Where another reply parts from this one: at this reply's token `index` (None: this reply ends
    there), where the other has `other_text`, with the log-probability its model gave it (None: not
    recorded, or the other reply ends there)."""

    index: int | None
    other_text: str
    other_logprob: float | None


def divergence(this: Spans, other: ReplyProbs) -> Divergence | None:
    """The first token where `other` differs from this reply, compared as text (models tokenise
    differently), taken back to the last token boundary both share: a token running across the
    first different character is where the choice was made. None: the same text."""
    theirs = Spans(other.tokens) if other.tokens else None
    other_text = theirs.text if theirs else (other.text or "")
    other_lead = theirs.lead if theirs else len(other_text) - len(other_text.lstrip())
    mine, yours = this.text[this.lead :], other_text[other_lead:]
    same = next((n for n, (a, b) in enumerate(zip(mine, yours, strict=False)) if a != b), min(len(mine), len(yours)))
    if same == len(mine) == len(yours):
        return None

    def start(spans: Spans | None, at: int) -> int:
        """Where the token holding character `at` starts (not before the reply's first visible character)."""
        index = spans.token_at(spans.lead + at) if spans else None
        return at if spans is None or index is None else max(0, spans.starts[index] - spans.lead)

    at = same
    while (earlier := min(start(this, at), start(theirs, at))) < at:
        at = earlier
    other_index = theirs.token_at(theirs.lead + at) if theirs else None
    if theirs is not None and other_index is not None:
        group = theirs.group(other_index)
        return Divergence(this.token_at(this.lead + at), theirs.text_of(group), theirs.logprob(group))
    return Divergence(this.token_at(this.lead + at), yours[at : at + 12], None)


class ProbsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,ctrl+t", "app.pop_screen", "Back"),
        Binding("left", "move(-1)", "◀ Token", priority=True),
        Binding("right", "move(1)", "Token ▶", priority=True),
        Binding("home", "move_to(0)", "First", show=False, priority=True),
        Binding("end", "move_to(-1)", "Last", show=False, priority=True),
        Binding("d", "divergence", "Divergence"),
        Binding("o", "other", "Other pane"),
    ]
    DEFAULT_CSS = """
    ProbsScreen #probs-title, ProbsScreen #probs-legend { height: auto; padding: 0 1; background: $panel; }
    ProbsScreen #probs-body { height: 1fr; padding: 0 1; }
    ProbsScreen #probs-details { height: auto; padding: 0 1; border-top: solid $panel-lighten-2; }
    """

    def __init__(self, turn: int, replies: list[ReplyProbs], current: int) -> None:
        super().__init__()
        self.turn = turn
        self.replies = replies  # every pane's reply to the turn, in the panes' order
        self.current = current
        tokens = replies[current].tokens
        assert tokens, "the current reply must have recorded tokens"
        self.spans = Spans(tokens)
        self.cursor = 0
        others = [n for n, reply in enumerate(replies) if n != current and reply.text is not None]
        # The other pane for the divergence: the next one with a reply, one with probabilities first.
        others.sort(key=lambda n: (replies[n].tokens is None, (n - current) % len(replies)))
        self.other = others[0] if others else None
        self.parting: Divergence | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="probs-title")
        yield Static(self.legend(), id="probs-legend")
        with VerticalScroll(id="probs-body"):
            yield Static(id="probs-reply")
        yield Static(id="probs-details")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#probs-body").can_focus = False  # the arrow keys move the cursor, not the scroll
        self.show()

    @staticmethod
    def legend() -> Text:
        line = Text()
        for _, label, style in BANDS:
            line.append("■ ", style=style).append(label, style=style).append("  ")
        return line.append("the model's own probabilities, before temperature and repeat penalty", "dim")

    # --- keys ------------------------------------------------------------------------------------

    def action_move(self, by: int) -> None:
        self.cursor = max(0, min(len(self.spans.tokens) - 1, self.cursor + by))
        self.show()

    def action_move_to(self, index: int) -> None:
        self.cursor = index % len(self.spans.tokens)
        self.show()

    def action_other(self) -> None:
        """The next pane with a reply to compare with."""
        candidates = [n for n, reply in enumerate(self.replies) if n != self.current and reply.text is not None]
        if not candidates:
            self.notify("No other pane has a reply to this turn", severity="warning")
            return
        after = [n for n in candidates if self.other is not None and n > self.other]
        self.other = (after or candidates)[0]
        self.parting = None
        self.show()

    def action_divergence(self) -> None:
        if self.other is None:
            self.notify("No other pane has a reply to this turn to compare with", severity="warning")
            return
        self.parting = divergence(self.spans, self.replies[self.other])
        if self.parting is None:
            self.notify(f"{self.replies[self.other].name}'s reply is the same as this one", markup=False)
        elif self.parting.index is not None:
            self.cursor = self.parting.index
        else:
            self.cursor = len(self.spans.tokens) - 1
        self.show()

    # --- what it shows -----------------------------------------------------------------------------

    def show(self) -> None:
        here = self.replies[self.current]
        title = Text.assemble(("Token probabilities", "bold"), f" · turn {self.turn} · ", (here.name, "bold"))
        if self.other is not None:
            title.append(f" · compared with {self.replies[self.other].name} (o: another)", style="dim")
        self.query_one("#probs-title", Static).update(title)
        self.query_one("#probs-reply", Static).update(self.reply_text())
        self.query_one("#probs-details", Static).update(self.details())
        self.call_after_refresh(self.scroll_to_cursor)

    def reply_text(self) -> Text:
        """The reply, each group of tokens in its band's colour, the cursor's reversed."""
        spans, text = self.spans, Text()
        cursor = spans.group(self.cursor)
        index = 0
        while index < len(spans.tokens):
            group = spans.group(index)
            words = spans.text_of(group)
            if index == 0:
                words = words.lstrip()
            style = BANDS[band(math.exp(spans.logprob(group)))][2]
            if group == cursor:
                style += " reverse"
            text.append(safe_text(words).replace("\n", "↵\n") or ("▯" if group == cursor else ""), style=style)
            index = group.stop
        return text

    def scroll_to_cursor(self) -> None:
        """Keep the cursor's line in view, in the middle where the reply is long."""
        body = self.query_one("#probs-body", VerticalScroll)
        before = self.spans.text[self.spans.lead : self.spans.starts[self.spans.group(self.cursor).start]]
        width = max(body.scrollable_content_region.width, 10)
        line = len(Text(safe_text(before).replace("\n", "↵\n") + "x").wrap(self.app.console, width)) - 1
        if not body.scroll_y <= line < body.scroll_y + body.scrollable_content_region.height:
            body.scroll_to(y=max(0, line - body.size.height // 2), animate=False)

    def details(self) -> Text:
        """The cursor's token: its probability, its likeliest alternatives, and the divergence if it is there."""
        spans = self.spans
        text, logprob, alternatives = spans.tokens[self.cursor]
        group = spans.group(self.cursor)
        lines = Text()
        lines.append(f"Token {self.cursor + 1} of {len(spans.tokens)}: ", style="bold")
        if text or len(group) == 1:
            lines.append(shown(text))
        else:
            lines.append(f"byte {self.cursor - group.start + 1} of {len(group)} of {shown(spans.text_of(group))}")
        probability = math.exp(logprob)
        lines.append(f"  {percent(probability)}", style=BANDS[band(probability)][2] + " bold")
        lines.append(f"  (log-prob {logprob:.3f})", style="dim")
        if len(group) > 1:
            lines.append(f" · the character's {len(group)} tokens together: {percent(math.exp(spans.logprob(group)))}")
        # The token among its alternatives: the same log-probability (as saved, to 4 decimals), and the same
        # text unless it is a byte of a longer character (whose text is the character's, on its last byte).
        chosen_rank = next(
            (n for n, (alt, p) in enumerate(alternatives, 1) if abs(p - logprob) < 5e-4 and (alt == text or not text)),
            None,
        )
        for rank, (alt, p) in enumerate(alternatives, start=1):
            share = math.exp(p)
            lines.append(f"\n {rank}. ").append(f"{shown(alt):<16}").append(f" {percent(share):>6} ")
            lines.append(bar(share), style=BANDS[band(share)][2])
            if rank == chosen_rank:
                lines.append("  ← chosen", style="bold")
        # The probabilities are before the sampler: it may pass over likelier tokens, also at temperature 0.
        why = "a temperature above 0 or the repeat penalty chose it"
        if chosen_rank is None and alternatives:
            lines.append(f"\n chosen: none of these; {why}", style="dim")
        elif chosen_rank and chosen_rank > 1:
            lines.append(f"\n not the likeliest: {why}", style="dim")
        if self.parting is not None and self.other is not None and self.parting.index in (self.cursor, None):
            lines.append("\n").append_text(self.parting_line())
        return lines

    def parting_line(self) -> Text:
        """Where the other pane's reply parts from this one, with both models' probabilities there (of the
        whole character, where one is made of several byte tokens)."""
        assert self.parting is not None and self.other is not None
        other, parting, spans = self.replies[self.other], self.parting, self.spans
        line = Text(f"Parts from {other.name} here: ", style="bold")
        if parting.index is None:
            line.append("this reply ends where the other goes on")
        else:
            group = spans.group(parting.index)
            line.append(f"this model {shown(spans.text_of(group))} {percent(math.exp(spans.logprob(group)))}")
        line.append(f"; {other.name} {shown(parting.other_text)} ")
        if other.tokens is None:
            line.append("(its probabilities were not recorded)", style="dim")
        elif parting.other_logprob is None:
            line.append("(its reply ends here)", style="dim")
        else:
            line.append(f"{percent(math.exp(parting.other_logprob))} (its own)")
        if parting.index is not None:
            _, _, alternatives = spans.tokens[parting.index]
            at_start = spans.starts[parting.index] <= spans.lead  # the first token: its leading space is not compared

            def same(alternative: str) -> bool:
                theirs = parting.other_text
                return alternative == theirs or (at_start and alternative.lstrip() == theirs.lstrip() != "")

            rank = next((n for n, (alt, _) in enumerate(alternatives, start=1) if same(alt)), None)
            if rank is not None:
                line.append(f"; this model's #{rank} choice ({percent(math.exp(alternatives[rank - 1][1]))})")
            else:
                line.append("; not among this model's likeliest", style="dim")
        return line


# --- opening it from the chat screen and from review ---------------------------------------------------


def open_probs(screen: Screen[None], turn: int, replies: list[ReplyProbs], current: int) -> None:
    """The view of reply `current`, or one line saying why there is nothing to show."""
    reply = replies[current]
    if reply.text is None:
        screen.notify(f"{reply.name} has no finished reply to turn {turn} yet", severity="warning", markup=False)
    elif not reply.tokens and not reply.text:
        screen.notify(f"{reply.name}'s reply to turn {turn} is empty: no tokens", severity="warning", markup=False)
    elif not reply.tokens:
        screen.notify(
            f"{reply.name}'s reply to turn {turn} was not recorded with token probabilities: {HOW_TO_RECORD}",
            severity="warning",
            timeout=10,
            markup=False,
        )
    else:
        screen.app.push_screen(ProbsScreen(turn, replies, current))


def saved_reply(pane: ModelPane, reply: Reply | None) -> ReplyProbs:
    """A reply from a saved transcript (review, a replay's original panes)."""
    name = safe_text(pane.label)  # "Model A" in a blind session before the reveal
    return ReplyProbs(name, None, None) if reply is None else ReplyProbs(name, reply.text, reply.tokens)


def probs_in_chat(screen: Screen[None], grid: PaneGrid, session: Session, replay_of: SessionRecord | None) -> None:
    """The chat's current pane's reply to the turn it shows: the latest while it shows the end, else
    the one at its top."""
    shown = grid.current_turn(len(session.conversation.user_turns))
    if shown is None:
        screen.notify("No turn yet: send one, then Ctrl+T shows its token probabilities", severity="warning")
        return
    pane, turn = shown
    panes = grid.ordered()
    replies = [
        saved_reply(each, replay_of.reply(turn, each.card.id) if replay_of else None)  # a replay's original
        if each.original
        else ReplyProbs(
            safe_text(each.label),
            session.conversation.replies.get(each.card.id, {}).get(turn),
            session.token_probs.get((turn, each.card.id)),
        )
        for each in panes
    ]
    open_probs(screen, turn, replies, panes.index(pane))


def probs_in_review(screen: Screen[None], grid: PaneGrid, record: SessionRecord, turn: int | None) -> None:
    """Review's current pane's saved reply to `turn` (the one at the top of the pane)."""
    pane = grid.current_pane()
    if pane is None or turn is None or not record.turns:
        screen.notify("This session has no turns", severity="warning")
        return
    turn = min(turn, len(record.turns))
    panes, replies = grid.ordered(), record.turns[turn - 1].replies
    open_probs(screen, turn, [saved_reply(each, replies.get(each.card.id)) for each in panes], panes.index(pane))
