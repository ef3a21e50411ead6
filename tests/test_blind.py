"""Blind mode, driven as a person would: panes as Model A, B, C in a drawn order, nothing on screen
that tells the models apart until the reveal, votes and guesses saved with the models' ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from chat_app import (
    FixedClock,
    all_answered,
    ask_the_emoji_question,
    chat,
    loaded,
    screenshot_app,
    scripted_app,
    send,
    send_and_wait,
    transcript_events,
)
from scripted import ScriptedModel, card
from textual.widgets import OptionList
from textual.widgets._toast import Toast
from waiting import until

from tui import transcript
from tui.app import LadderApp
from tui.blind import ALL_BAD, TIE, Blind, GuessScore, refusal, title_note
from tui.cards import ModelCard
from tui.cli import main
from tui.engine.events import Finished, Notice, TurnEvent, TurnRequest
from tui.export import to_markdown
from tui.history import load_record
from tui.screens.chat import ChatScreen
from tui.screens.models import ModelsScreen
from tui.screens.vote import ChoiceScreen

LADDER = [
    card("tiny", 100_000_000, "Tiny 100M"),
    card("mid", 500_000_000, "Mid 500M"),
    card("big", 1_500_000_000, "Big 1.5B"),
]
SEED = 1  # draws mid, big, tiny: Model A is the middle one, B the largest, C the smallest
ORDER = ["mid", "big", "tiny"]
# What would tell the scripted models apart: names, parameters, file sizes, quantisation, family,
# speed, time to first token, context.
GIVEAWAYS = ["Tiny", "Mid", "Big", "100M", "500M", "1.5B", "50 MB", "250 MB", "750 MB", "Q4_0", "Scripted"]
GIVEAWAYS += ["t/s", "TTFT", "ctx", "damaged"]


def blind_app(
    tmp_path: Path,
    cards: list[ModelCard] = LADDER,
    *,
    seed: int | None = SEED,
    delays: dict[str, float] | None = None,
    words: int = 4,
    failing: str | None = None,
    backend: Callable[[ModelCard], ScriptedModel] | None = None,
) -> LadderApp:
    """The chat app on scripted models (or `backend`'s), blind from the start with `seed` (None: not blind)."""

    def make_backend(c: ModelCard) -> ScriptedModel:
        if backend is not None:
            return backend(c)
        return ScriptedModel(
            c,
            script=lambda request: " ".join(["ocean"] * words),  # the same reply: nothing in it gives a model away
            delay=(delays or {}).get(c.id, 0.01),
            load_error="the file is damaged" if c.id == failing else None,
        )

    app = scripted_app(tmp_path, cards, make_backend)
    if seed is not None:
        app.session.start_blind(seed)
    return app


def screen_text(app: LadderApp) -> str:
    """Every character on screen, as a person sees it."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def toasts(app: LadderApp) -> str:
    return " | ".join(str(toast.render()) for toast in app.screen.query(Toast))


async def choose(pilot, key: str, expect_dialog: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Press `key` on the chat screen and wait for its dialog (if it opens one)."""
    await pilot.press(key)
    if expect_dialog:
        await until(pilot, lambda: isinstance(pilot.app.screen, ChoiceScreen), what=f"the dialog of {key}")


async def answer(pilot, key: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen), what="the dialog closed")


# --- the draw ---------------------------------------------------------------------------------


def test_the_draw_is_the_same_for_a_seed_and_differs_between_seeds() -> None:
    ids = ["tiny", "mid", "big", "huge"]
    assert Blind.draw(ids, 7).order == Blind.draw(ids, 7).order
    orders = {tuple(Blind.draw(ids, seed).order) for seed in range(20)}
    assert all(sorted(order) == sorted(ids) for order in orders)
    assert len(orders) > 5  # 24 orders are possible: a seed changes which one
    assert Blind.draw(ids, 3).header() == {"order": Blind.draw(ids, 3).order, "seed": 3}
    assert len({Blind.draw(ids).seed for _ in range(5)}) > 1  # without a seed, a fresh one each session


def test_a_session_of_one_model_or_more_models_than_letters_cannot_be_blind() -> None:
    assert refusal(1) == "needs at least two models to compare; this session has 1"
    assert refusal(2) is None and refusal(19) is None
    assert refusal(20) is not None and "at most 19" in str(refusal(20))


def test_the_title_note_counts_votes_and_shows_the_guess_only_before_the_reveal() -> None:
    blind = Blind(["mid", "big", "tiny"], 1)
    tally = GuessScore()
    assert title_note(None, tally) == ""
    assert title_note(blind, tally) == " · blind"
    blind.vote(1, "big", ORDER)
    blind.make_guess(1, "big", {"mid": 5, "big": 15, "tiny": 1})
    assert title_note(blind, tally) == " · blind · 1 vote · guessed Model B largest"
    blind.reveal(1, {"mid": 5, "big": 15, "tiny": 1}, tally)
    assert title_note(blind, tally) == " · blind, names shown · 1 vote · guesses 1/1 right"
    assert title_note(None, tally) == " · guesses 1/1 right"  # the score outlives the session


# --- on screen ----------------------------------------------------------------------------------


async def test_a_blind_session_shows_its_panes_in_the_drawn_order_and_records_it(tmp_path: Path) -> None:
    app = blind_app(tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        screen = await loaded(pilot)
        left_to_right = sorted(screen.panes.values(), key=lambda pane: pane.region.x)
        assert [pane.card.id for pane in left_to_right] == ORDER
        assert [pane.label for pane in left_to_right] == ["Model A", "Model B", "Model C"]
        await send_and_wait(pilot, "hello", 1)
    header = transcript_events(app)[0]
    assert header["blind"] == {"order": ORDER, "seed": SEED}


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
async def test_names_sizes_and_speeds_are_hidden_until_the_reveal(tmp_path: Path, size: tuple[int, int]) -> None:
    four = [*LADDER, card("huge", 3_000_000_000, "Huge 3B")]
    app = blind_app(tmp_path, four, failing="mid")  # its load error would name its file
    async with app.run_test(size=size, notifications=True) as pilot:
        screen = await loaded(pilot)
        await send(pilot, "hello")
        await all_answered(pilot, 1, [pane for pane in screen.panes.values() if pane.card.id != "mid"])
        await pilot.pause()
        shown = screen_text(app)
        assert "Model A" in shown and "Model D" in shown and "ocean" in shown  # A: huge, answered
        assert [word for word in GIVEAWAYS + ["Huge", "3.0B"] if word in shown] == []
        await pilot.press("f3")  # removing a model would show which pane it was
        await until(pilot, lambda: "would show which pane is which" in toasts(app), what="the refusal")
        assert not isinstance(app.screen, ModelsScreen)
        await choose(pilot, "ctrl+n")
        await answer(pilot, "r")
        await pilot.pause()
        shown = screen_text(app)
        if size == (200, 50):  # every pane, its facts and numbers
            for word in ["Mid 500M", "Big 1.5B", "Tiny 100M", "Huge 3B", "500M · Q4_0", "t/s", "ctx", "damaged"]:
                assert word in shown, word
        else:  # one pane at a time, the others named in the switcher line
            assert "A · Huge 3B" in shown and "B 100M Tiny" in shown and "D 500M Mid" in shown


async def test_votes_guesses_and_the_reveal_are_saved_with_the_models_ids(tmp_path: Path) -> None:
    app = blind_app(tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await loaded(pilot)
        await send_and_wait(pilot, "hello", 1)
        await choose(pilot, "ctrl+v")
        await answer(pilot, "b")  # Model B: the big one
        await choose(pilot, "ctrl+g")
        await answer(pilot, "B")  # upper case works too
        title = str(chat(app).query_one("#title").render())
        assert "blind · 1 vote · guessed Model B largest" in title
        await choose(pilot, "ctrl+n")
        await answer(pilot, "enter")  # the highlighted choice: reveal
        assert "guesses 1/1 right" in str(chat(app).query_one("#title").render())
        assert "Your guess, Model B (Big 1.5B): right" in toasts(app)
        await send_and_wait(pilot, "again", 2)
        await choose(pilot, "ctrl+v")
        await answer(pilot, "t")
    events = [event for event in transcript_events(app) if event["type"] in ("vote", "guess", "reveal")]
    for event in events:
        del event["at"]
    panes = {"A": "mid", "B": "big", "C": "tiny"}
    assert events == [
        {"type": "vote", "turn": 1, "choice": "big", "blind": True, "panes": panes},
        {"type": "guess", "turn": 1, "model": "big", "largest": "big", "right": True},
        {"type": "reveal", "turn": 1},
        {"type": "vote", "turn": 2, "choice": TIE, "blind": False, "panes": panes},
    ]
    record = load_record(app.session.transcript.path or Path())
    assert record.problems == []
    assert record.blind is not None and record.blind.order == ORDER and record.blind.revealed
    assert record.blind.votes == {1: "big", 2: TIE} and record.blind.guess == "big"
    exported = to_markdown(record)  # the names, not the letters: the transcript has the ids
    assert all(name in exported for name in ("Tiny 100M", "Mid 500M", "Big 1.5B"))


async def test_the_vote_dialog_has_a_key_per_pane_tie_and_all_bad(tmp_path: Path) -> None:
    app = blind_app(tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await loaded(pilot)
        await choose(pilot, "ctrl+v", expect_dialog=False)
        await until(pilot, lambda: "Nothing to vote on yet" in toasts(app), what="no turn to vote on")
        await send_and_wait(pilot, "hello", 1)
        await choose(pilot, "ctrl+v")
        options = app.screen.query_one(OptionList)
        lines = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert lines == [" A   Model A", " B   Model B", " C   Model C", " T   tie: about as good", " X   all bad"]
        await pilot.press("q")  # not a choice: nothing happens
        assert isinstance(app.screen, ChoiceScreen)
        await answer(pilot, "x")
        await choose(pilot, "ctrl+v", expect_dialog=False)
        await until(pilot, lambda: "Turn 1 has your vote already: all bad" in toasts(app), what="one vote a turn")
        await choose(pilot, "ctrl+v", expect_dialog=False)
        assert not isinstance(app.screen, ChoiceScreen)
    votes = [event for event in transcript_events(app) if event["type"] == "vote"]
    assert [vote["choice"] for vote in votes] == [ALL_BAD]


async def test_a_cancelled_reply_can_lose_a_vote_but_not_win_it(tmp_path: Path) -> None:
    app = blind_app(tmp_path, delays={"tiny": 0.0, "mid": 0.2, "big": 0.2}, words=100)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        screen = await loaded(pilot)
        await send(pilot, "hello")
        tiny, mid = screen.panes["tiny"], screen.panes["mid"]
        await until(pilot, lambda: tiny.state == "done" and mid.state == "streaming", what="one reply done")
        await choose(pilot, "ctrl+v", expect_dialog=False)
        await until(pilot, lambda: "still answering (Esc cancels)" in toasts(app), what="votes wait for replies")
        await pilot.press("escape")
        await all_answered(pilot, 1)
        await choose(pilot, "ctrl+v")
        options = app.screen.query_one(OptionList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(3)]
        assert prompts == [
            " A   Model A  cancelled: can lose, not win",  # mid
            " B   Model B  cancelled: can lose, not win",  # big
            " C   Model C",  # tiny, done
        ]
        await pilot.press("a")
        await until(pilot, lambda: "Model A: cancelled: can lose, not win" in toasts(app), what="the refusal")
        assert isinstance(app.screen, ChoiceScreen)
        await answer(pilot, "c")
    votes = [event for event in transcript_events(app) if event["type"] == "vote"]
    assert [(vote["choice"], vote["blind"]) for vote in votes] == [("tiny", True)]


async def test_ctrl_b_starts_a_new_blind_session_and_f4_a_plain_one(tmp_path: Path) -> None:
    app = blind_app(tmp_path, seed=None)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        screen = await loaded(pilot)
        assert app.session.blind is None and screen.panes["tiny"].label == "Tiny 100M"
        await send_and_wait(pilot, "hello", 1)
        first = app.session.transcript.path
        await pilot.press("ctrl+b")
        await until(pilot, lambda: app.session.blind is not None, what="a blind session")
        blind = app.session.blind
        assert blind is not None and app.session.transcript.path is None  # a new session, saved from its first turn
        left_to_right = sorted(screen.panes.values(), key=lambda pane: pane.region.x)
        await until(pilot, lambda: sorted(screen.panes.values(), key=lambda p: p.region.x)[0].card.id == blind.order[0])
        assert all(pane.hidden for pane in left_to_right) and not screen.query(".turn")
        await send_and_wait(pilot, "hello", 1)
        assert app.session.transcript.path != first
        assert transcript_events(app)[0]["blind"] == blind.header()
        await pilot.press("f4")
        await until(pilot, lambda: app.session.blind is None, what="a plain session")
        await until(pilot, lambda: not screen.panes["big"].hidden, what="the names")
        left_to_right = sorted(screen.panes.values(), key=lambda pane: pane.region.x)
        assert [pane.card.id for pane in left_to_right] == ["tiny", "mid", "big"]  # by size again


async def test_blind_mode_refuses_a_single_model(tmp_path: Path) -> None:
    app = blind_app(tmp_path, LADDER[:1], seed=None)
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+b")
        await until(pilot, lambda: "needs at least two models" in toasts(app), what="the refusal")
        assert app.session.blind is None
        with pytest.raises(ValueError, match="Blind mode needs at least two models to compare; this session has 1"):
            app.session.start_blind()


def test_ladder_blind_with_one_model_says_why_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A card whose file is not here: the refusal comes before any model is fetched or loaded.
    assert main(["--blind", "--model", "qwen2.5-7b-instruct", "--sessions-dir", str(tmp_path)]) == 2
    said = "--blind needs at least two models to compare; this session has 1; add models with --model or --lineup"
    assert capsys.readouterr().err == f"ladder: {said}\n"


class NoticingModel(ScriptedModel):
    """A model whose replies come with a notice naming it, as a context notice names its size."""

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        yield Notice(f"{self.card.name}: left out 3 turns")
        async for event in super().turn(request):
            if isinstance(event, Finished):
                event = replace(event, notices=[f"{self.card.name}: left out 3 turns"])
            yield event


async def test_a_hidden_panes_notices_and_errors_wait_for_the_reveal(tmp_path: Path) -> None:
    def backend(c: ModelCard) -> ScriptedModel:  # "big" tells of a notice, "tiny" fails to load
        if c.id == "big":
            return NoticingModel(c)
        return ScriptedModel(c, load_error="tiny.gguf is damaged" if c.id == "tiny" else None)

    app = blind_app(tmp_path, backend=backend)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        screen = await loaded(pilot)
        await send(pilot, "hello")
        await all_answered(pilot, 1, [screen.panes["big"], screen.panes["mid"]])
        await pilot.pause()
        assert "left out" not in toasts(app) and "left out" not in screen_text(app)
        assert "damaged" not in screen_text(app) and "✗ error" in str(screen.panes["tiny"].header.render())
        await choose(pilot, "ctrl+n")
        await answer(pilot, "r")
        await pilot.pause()
        assert "Big 1.5B: left out 3 turns" in screen_text(app) and "tiny.gguf is damaged" in screen_text(app)


# --- snapshots ------------------------------------------------------------------------------------


@pytest.fixture
def snapshot_app(monkeypatch: pytest.MonkeyPatch) -> LadderApp:
    monkeypatch.setattr(transcript, "datetime", FixedClock)
    app = screenshot_app()
    app.session.start_blind(2)  # base, coder, coder-big, smol
    return app


async def vote_dialog(pilot) -> None:  # type: ignore[no-untyped-def]
    await ask_the_emoji_question(pilot)
    await choose(pilot, "ctrl+v")
    await pilot.pause()


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_blind_chat(snap_compare, snapshot_app: LadderApp, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(snapshot_app, terminal_size=size, run_before=ask_the_emoji_question)


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_vote_dialog(snap_compare, snapshot_app: LadderApp, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(snapshot_app, terminal_size=size, run_before=vote_dialog)


def test_the_transcript_of_a_blind_session_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "blind.jsonl"
    header = {
        "type": "session",
        "format": 1,
        "models": [c.header() for c in LADDER],
        "blind": {"order": ORDER, "seed": 1},
    }
    events = [
        {"type": "user", "turn": 1, "text": "hi"},
        {"type": "vote", "turn": 1, "choice": "tiny", "blind": True, "panes": {"A": "mid", "B": "big", "C": "tiny"}},
        {"type": "vote", "turn": 1, "choice": "big", "blind": True, "panes": {"A": "mid", "B": "big", "C": "tiny"}},
        {"type": "vote", "turn": "one", "choice": "big"},
        {"type": "guess", "turn": 1, "model": 7},
    ]
    path.write_text("\n".join(json.dumps(line) for line in [header, *events]) + "\n")
    record = load_record(path)
    assert record.blind is not None and record.blind.order == ORDER and record.blind.seed == 1
    assert record.blind.votes == {1: "big"}  # voted again: the last vote counts
    assert record.blind.guess is None and not record.blind.revealed
    assert record.problems == [f"{path.name}: 2 event(s) with fields of the wrong type; left out"]
