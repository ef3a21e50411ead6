"""Blind mode on the chat screen: a new blind session (Ctrl+B), the vote on a turn (Ctrl+V), the
"guess the largest" game (Ctrl+G) and the reveal (Ctrl+N). Each key opens a small dialog answered
with one key; what is chosen is appended to the transcript (see `tui.blind`). The chat screen hands
each action its session and pane grid (and, to start a session, its `start_over` and `may_leave`).

A vote is on the latest turn, once every reply to it has ended. A reply that was cancelled, failed
or never came takes part: it can lose (a vote for another pane beats it), but not win."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.blind import ALL_BAD, TIE, refusal
from tui.session import Session
from tui.textsafe import safe_text
from tui.widgets.grid import PaneGrid
from tui.widgets.pane import ModelPane


@dataclass(frozen=True)
class Choice:
    key: str  # one letter, shown upper case; pressed in either case
    label: str
    value: str
    refused: str = ""  # why this one cannot be chosen (shown beside it), or "" if it can


class ChoiceScreen(ModalScreen[str | None]):
    """A question answered with one key (or the arrows and Enter); Esc answers None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, choices: list[Choice], hint: str) -> None:
        super().__init__()
        self.question = question
        self.choices = choices
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(safe_text(self.question), style="bold"))
            options = []
            for choice in self.choices:
                label = Text.assemble((f" {choice.key} ", "bold reverse"), f"  {safe_text(choice.label)}")
                if choice.refused:
                    label.append(f"  {choice.refused}", style="italic")
                options.append(Option(label, id=choice.key, disabled=bool(choice.refused)))
            yield OptionList(*options)
            yield Static(Text(self.hint, style="dim"))

    def on_mount(self) -> None:
        self.styles.align = ("center", "bottom")  # over the panes' ends: the replies above stay in sight
        options = self.query_one(OptionList)
        options.styles.height = len(self.choices) + 2
        options.focus()

    def on_key(self, event: events.Key) -> None:
        key = (event.character or "").upper()
        choice = next((choice for choice in self.choices if choice.key == key), None)
        if choice is None:
            return
        event.stop()
        if choice.refused:
            self.notify(f"{choice.label}: {choice.refused}", severity="warning", markup=False)
        else:
            self.dismiss(choice.value)

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(next(choice.value for choice in self.choices if choice.key == event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)


# --- the chat screen's blind actions ----------------------------------------------------------

BUSY = ("waiting", "fetching", "loading", "thinking", "streaming")  # a turn queued or being answered


def show_blind(session: Session, pane: ModelPane) -> None:
    """Give a pane its letter in a blind session, hidden until the reveal; no letter otherwise."""
    blind = session.blind
    pane.letter = blind.letter(pane.card.id) if blind is not None and not pane.original else ""
    pane.hidden = blind is not None and not blind.revealed and pane.letter != ""


def show_blind_panes(session: Session, grid: PaneGrid) -> None:
    """Every pane as the session is (blind or not, revealed or not), in the session's order: a new
    blind session draws a new one, and a session that is not blind has its panes by size again."""
    for pane in grid.panes.values():
        show_blind(session, pane)
    container = grid.query_one("#panes", Container)
    wanted = sorted(grid.panes.values(), key=lambda pane: pane.place)
    if list(container.children) != wanted:
        for pane in wanted:  # each to the end in turn: they end up in the wanted order
            container.move_child(pane, after=container.children[-1])
        grid.update_layout()
    else:
        grid.update_switcher()  # it names the panes


def hidden_refuses(screen: Screen[None], session: Session, what: str) -> bool:
    """Whether `what` must wait for the reveal (it would show which pane is which); says so if it must."""
    if session.blind is None or session.blind.revealed:
        return False
    screen.notify(
        f"{what} would show which pane is which: Ctrl+N reveals the names first", severity="warning", markup=False
    )
    return True


async def start_blind_session(
    screen: Screen[None], session: Session, start_over: Callable[[], Awaitable[None]], may_leave: Callable[[str], bool]
) -> None:
    """A new blind session, by `start_over` (which draws the order), if it can be and the current one may be left."""
    problem = refusal(len(session.models))
    if problem:
        screen.notify(f"Blind mode {problem}; F3 adds models", severity="error", timeout=8, markup=False)
        return
    if not may_leave("Ctrl+B again starts a new blind session"):
        return
    await start_over()
    screen.app.clear_notifications()  # e.g. the last round's names
    screen.notify(
        "The panes are Model A, B… in a shuffled order; names, sizes and speeds are hidden. "
        "Ctrl+V votes on each turn, Ctrl+G guesses the largest, Ctrl+N reveals the names.",
        title="A new blind session",
        timeout=10,
    )


def _blind_panes(grid: PaneGrid) -> list[ModelPane]:
    """The panes of the blind session's models, A first."""
    return sorted((pane for pane in grid.panes.values() if pane.letter), key=lambda pane: pane.letter)


def _not_blind(screen: Screen[None], session: Session, what: str) -> bool:
    if session.blind is not None:
        return False
    screen.notify(f"{what} for blind sessions: Ctrl+B starts one", severity="warning")
    return True


def _ending(pane: ModelPane, turn: int) -> str:
    """How the pane's reply to `turn` ended, when it cannot win a vote; "" when it can."""
    view = pane.turn_view(turn)
    if view is None:
        return "no reply: can lose, not win"
    if view.has_class("-error"):
        return "failed: can lose, not win"
    if view.has_class("-cancelled"):
        return "cancelled: can lose, not win"
    return ""


def vote(screen: Screen[None], session: Session, grid: PaneGrid) -> None:
    """Ask which reply to the latest turn is best (or a tie, or all bad), and record it."""
    blind = session.blind
    if _not_blind(screen, session, "Votes are") or blind is None:
        return
    turn = len(session.conversation.user_turns)
    if turn == 0:
        screen.notify("Nothing to vote on yet: send a turn first", severity="warning")
        return
    if turn in blind.votes:
        screen.notify(f"Turn {turn} has your vote already: {vote_label(grid, blind.votes[turn])}", markup=False)
        return
    panes = _blind_panes(grid)
    replied = session.conversation.replies
    busy = [pane.label for pane in panes if pane.state in BUSY and turn not in replied.get(pane.card.id, {})]
    if busy:
        screen.notify(
            f"Vote once every reply to turn {turn} has ended: {', '.join(busy)} still answering (Esc cancels)",
            severity="warning",
            markup=False,
        )
        return
    choices = [Choice(pane.letter, pane.label, pane.card.id, _ending(pane, turn)) for pane in panes]
    choices += [Choice("T", "tie: about as good", TIE), Choice("X", "all bad", ALL_BAD)]
    prompt = session.conversation.user_turns[-1].replace("\n", " ")
    question = f"Turn {turn} ({prompt[:50]}{'…' if len(prompt) > 50 else ''}): which reply is best?"

    def record(choice: str | None) -> None:
        if choice is not None:
            session.save(blind.vote(turn, choice, [pane.card.id for pane in panes]))
            screen.notify(f"Turn {turn}: {vote_label(grid, choice)}", title="Vote saved", markup=False)

    hint = "A letter votes · ↑↓ Enter · Esc: no vote" + ("" if blind.revealed else " · names stay hidden")
    screen.app.push_screen(ChoiceScreen(question, choices, hint), record)


def vote_label(grid: PaneGrid, choice: str) -> str:
    if choice == TIE:
        return "a tie"
    if choice == ALL_BAD:
        return "all bad"
    pane = grid.panes.get(choice)
    return f"{pane.label if pane else choice}'s reply is best"


def _sizes(session: Session) -> dict[str, int | None]:
    """The parameter count of each model of the blind session (None: unknown, a remote model)."""
    blind = session.blind
    return {m.card.id: m.card.params for m in session.models if blind is not None and m.card.id in blind.order}


def guess(screen: Screen[None], session: Session, grid: PaneGrid) -> None:
    """Ask which pane is the largest model (once per blind session, before the reveal), and record it."""
    blind = session.blind
    if _not_blind(screen, session, "Guessing the largest is") or blind is None:
        return
    panes = _blind_panes(grid)
    if blind.revealed:
        screen.notify("The names are shown: guess before the reveal. Ctrl+B starts a new round", severity="warning")
        return
    if blind.guess is not None:
        screen.notify(f"You guessed {blind.label(blind.guess)}; Ctrl+N reveals whether it is the largest")
        return
    turn = len(session.conversation.user_turns)
    if turn == 0:
        screen.notify("Send a turn first: guess from the replies", severity="warning")
        return
    sizes = _sizes(session)
    unknown = [pane.label for pane in panes if sizes.get(pane.card.id) is None]
    if unknown:
        screen.notify(f"The game needs every model's size; {', '.join(unknown)} has none (remote)", markup=False)
        return
    known = {model_id: size for model_id, size in sizes.items() if size is not None}

    def record(model_id: str | None) -> None:
        if model_id is not None:
            session.save(blind.make_guess(turn, model_id, known))
            screen.notify(f"{blind.label(model_id)} is the largest, you say. Ctrl+N reveals whether it is")

    choices = [Choice(pane.letter, pane.label, pane.card.id) for pane in panes]
    hint = "A letter guesses · ↑↓ Enter · Esc: not now · one guess per blind session"
    screen.app.push_screen(ChoiceScreen("Which pane is the largest model?", choices, hint), record)


def reveal(screen: Screen[None], session: Session, grid: PaneGrid) -> None:
    """Ask to reveal the names; then show them, say whether the guess was right, and record it."""
    blind = session.blind
    if blind is None:
        screen.notify("Nothing to reveal: the names are shown. Ctrl+B starts a blind session")
        return
    if blind.revealed:
        screen.notify("The names are shown already")
        return
    choices = [Choice("R", "Reveal the names", "reveal")]
    if blind.guess is None and session.conversation.user_turns:
        choices.append(Choice("G", "Guess the largest first", "guess"))

    def answered(choice: str | None) -> None:
        if choice == "guess":
            guess(screen, session, grid)
        elif choice == "reveal":
            show_names(screen, session, grid)

    hint = "Votes after the reveal are saved as not blind · Esc: keep them hidden"
    screen.app.push_screen(ChoiceScreen("Reveal which model is in which pane?", choices, hint), answered)


def show_names(screen: Screen[None], session: Session, grid: PaneGrid) -> None:
    blind = session.blind
    assert blind is not None
    sizes = {model_id: size for model_id, size in _sizes(session).items() if size is not None}
    session.save(blind.reveal(len(session.conversation.user_turns), sizes, session.guess_score))
    show_blind_panes(session, grid)
    names = " · ".join(f"{pane.letter}: {pane.card.name}" for pane in _blind_panes(grid))
    if blind.guess is not None and blind.guess in sizes:
        right = sizes[blind.guess] == max(sizes.values())
        guessed = grid.panes[blind.guess].label
        names += f"\nYour guess, {blind.label(blind.guess)} ({guessed}): {'right' if right else 'wrong'}"
        names += f" · guesses right so far: {session.guess_score}"
    screen.notify(names, title="The names", timeout=15, markup=False)
