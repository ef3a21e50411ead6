"""The diff of two replies: word-level segments on known pairs (tui/diff.py), and the diff
view opened from the chat screen (Ctrl+D) and from review (d), driven through the pilot with
scripted models; snapshots at 80×24 and 200×50. Its speed is measured, not asserted (README)."""

from __future__ import annotations

import random
from difflib import SequenceMatcher
from pathlib import Path

import pytest
from chat_app import all_answered, answered, chat, loaded, open_screen, scripted_app, send, send_and_wait
from rich.text import Text
from scripted import ScriptedModel, card
from textual.widgets import Static
from textual.widgets._toast import Toast
from waiting import until

from tui.app import LadderApp
from tui.cards import Catalog, ModelCard
from tui.diff import Segment, diff_words
from tui.history import load_record
from tui.screens.chat import ChatScreen
from tui.screens.diff import ONLY_HERE, ONLY_THERE, DiffScreen, Side, summary
from tui.screens.review import ReviewScreen

# --- the segments ------------------------------------------------------------------------------------


def equal(a: str, b: str | None = None) -> Segment:
    """Words both texts share; `b`: as the second text writes them, where its whitespace differs."""
    return Segment("equal", a, a if b is None else b)


def delete(a: str) -> Segment:
    return Segment("delete", a, "")


def insert(b: str) -> Segment:
    return Segment("insert", "", b)


def test_a_changed_word_is_a_delete_then_an_insert_between_the_shared_runs() -> None:
    diff = diff_words("The film is Finding Nemo, a story about fish.", "The film is Finding Dory, a story about fish.")
    assert diff.segments == [
        equal("The film is Finding "),
        delete("Nemo, "),
        insert("Dory, "),
        equal("a story about fish."),
    ]
    assert (diff.words_a, diff.words_b, diff.same, diff.first_difference) == (9, 9, 8, 5)
    assert diff.ratio == pytest.approx(8 / 9)


def test_words_only_one_text_has_are_a_lone_delete_or_insert() -> None:
    diff = diff_words("one two three four", "one three four five six")
    assert diff.segments == [equal("one "), delete("two "), equal("three four", "three four "), insert("five six")]
    assert diff.first_difference == 2


def test_a_text_that_only_goes_on_further_parts_one_past_the_other_s_last_word() -> None:
    diff = diff_words("Paris is the capital", "Paris is the capital of France.")
    assert diff.segments[-1] == insert("of France.")
    assert diff.first_difference == 5


def test_each_word_keeps_its_own_whitespace_and_a_change_of_spacing_alone_is_no_difference() -> None:
    a = "```python\ndef f():\n    return 1\n```"
    b = "  ```python\ndef f():\n  return 1\n```\n"
    diff = diff_words(a, b)
    assert diff.identical and diff.first_difference is None and diff.ratio == 1.0
    assert diff.segments == [equal(a, b.lstrip())]  # whitespace before the first word is dropped


def test_identical_replies() -> None:
    diff = diff_words("Finding Nemo (2003).", "Finding Nemo (2003).")
    assert diff.identical and diff.segments == [equal("Finding Nemo (2003).")]
    assert (diff.same, diff.ratio, diff.first_difference) == (3, 1.0, None)


def test_empty_replies() -> None:
    both = diff_words("", "  \n")
    assert both.segments == [] and both.identical and both.ratio == 1.0 and both.first_difference is None
    one = diff_words("", "Finding Nemo")
    assert one.segments == [insert("Finding Nemo")]
    assert (one.ratio, one.first_difference, one.identical) == (0.0, 1, False)


def test_common_words_shared_inside_a_changed_stretch_count_as_the_same() -> None:
    """In 400 words "the" is too common to anchor a match with autojunk on (over 1% of them);
    the second pass still finds every "the" the two texts share in the stretch that differs."""
    a = " ".join(f"the x{i}" for i in range(200))
    b = " ".join(f"the {'y' if 50 <= i < 150 else 'x'}{i}" for i in range(200))
    diff = diff_words(a, b)
    assert diff.same == 300  # 200 × "the" and the 100 words left unchanged
    assert diff.first_difference == 102  # "x50", the 102nd word
    one_pass = SequenceMatcher(None, a.split(), b.split(), autojunk=True).get_matching_blocks()
    assert sum(block.size for block in one_pass) < 300  # what the second pass is for


def test_a_stretch_too_large_for_the_second_pass_is_left_as_the_first_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    a = " ".join(f"the x{i}" for i in range(200))
    b = " ".join(f"the {'y' if 50 <= i < 100 else 'x'}{i}" for i in range(200))
    first_pass = SequenceMatcher(None, a.split(), b.split(), autojunk=True).get_matching_blocks()
    monkeypatch.setattr("tui.diff.SECOND_PASS_LIMIT", 0)
    assert diff_words(a, b).same == sum(block.size for block in first_pass) < 350
    monkeypatch.undo()
    assert diff_words(a, b).same == 350  # 200 × "the" and the 150 words left unchanged


def words_of(text: str, rng: random.Random) -> list[str]:
    return rng.choices(text.split(), k=rng.randrange(0, 600))


@pytest.mark.parametrize("seed", range(20))
def test_the_segments_give_back_both_texts_and_agree_with_difflib_on_how_much_is_shared(seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = "the a of and to in is , . fish Nemo Dory ocean reef ```\n\n -"
    a = " ".join(words_of(vocabulary, rng))
    b = a if seed % 5 == 0 else " ".join(words_of(vocabulary, rng))
    if seed % 2:  # similar texts: b is a with some words changed, dropped or added
        b = " ".join(w for w in a.split(" ") if rng.random() > 0.1) + " " + " ".join(words_of(vocabulary, rng)[:20])
    diff = diff_words(a, b)
    assert "".join(s.a for s in diff.segments) == a.lstrip()
    assert "".join(s.b for s in diff.segments) == b.lstrip()
    kinds = [s.kind for s in diff.segments]
    assert all(not (x == y == "equal") for x, y in zip(kinds, kinds[1:], strict=False))
    thorough = SequenceMatcher(None, a.split(), b.split(), autojunk=False)
    shared = sum(block.size for block in thorough.get_matching_blocks())
    assert abs(diff.same - shared) <= max(2, shared // 100)  # within 1% of one slower pass with autojunk off


# --- the one-line summary and the replies there is nothing to compare in ------------------------------


def test_the_summary_says_how_much_is_shared_and_where_the_replies_part() -> None:
    here, there = Side("Tiny", "a b c d", "done"), Side("Mid", "a b x d y", "done")
    line = summary(diff_words(here.text, there.text), here, there)
    assert line == "67% the same words; first difference at word 3 · 1 word only in Tiny, 2 only in Mid"


def test_the_summary_says_99_percent_not_100_of_replies_that_differ_by_a_word_in_a_thousand() -> None:
    here, there = Side("Tiny", "word " * 999 + "end", "done"), Side("Mid", "word " * 999 + "stop", "done")
    line = summary(diff_words(here.text, there.text), here, there)
    assert line.startswith("99% the same words; first difference at word 1000")


def test_the_summary_of_identical_replies_says_identical_and_notes_a_cancelled_one() -> None:
    here, there = Side("Tiny", "Finding  Nemo", "done"), Side("Mid", "Finding Nemo", "cancelled")
    line = summary(diff_words(here.text, there.text), here, there)
    assert line == "Identical (spacing aside): the same 2 words · Mid's reply was cancelled"


@pytest.mark.parametrize(
    ("side", "problem"),
    [
        (Side("Mid", "", "missing"), "Mid has no finished reply to turn 2"),
        (Side("Mid", " \n", "done"), "Mid's reply to turn 2 is empty"),
        (Side("Mid", "", "cancelled"), "Mid's reply to turn 2 was cancelled before any text"),
        (Side("Mid", "", "error"), "Mid's reply to turn 2 failed before any text"),
        (Side("Mid", "partial text", "cancelled"), None),
    ],
)
def test_a_reply_with_nothing_to_compare_says_why_in_one_line(side: Side, problem: str | None) -> None:
    assert side.problem(2) == problem


# --- the view, from the chat screen -----------------------------------------------------------------

CARDS = [
    card("tiny", 100_000_000, "Tiny 100M"),
    card("mid", 500_000_000, "Mid 500M"),
    card("big", 1_500_000_000, "Big 1.5B"),
]
REPLIES = {
    "tiny": "The film is Finding Nemo, a story about fish.",
    "mid": "The film is Finding Dory, a story about fish.",
    "big": "The film is Finding Nemo, a story about fish.",
}


def make_app(
    tmp_path: Path,
    cards: list[ModelCard] = CARDS,
    delays: dict[str, float] | None = None,
    replies: dict[str, str] = REPLIES,
) -> LadderApp:
    def backend(c: ModelCard) -> ScriptedModel:
        return ScriptedModel(c, script=lambda request: replies[c.id], delay=(delays or {}).get(c.id, 0.0))

    return scripted_app(tmp_path, cards, backend)


def shown(screen: DiffScreen, widget_id: str) -> str:
    return str(screen.query_one(widget_id, Static).render())


def styled(screen: DiffScreen, widget_id: str, style: str) -> list[str]:
    """The parts of a column shown in `style`."""
    text = screen.query_one(widget_id, Static).content
    assert isinstance(text, Text)
    return [text.plain[span.start : span.end] for span in text.spans if str(span.style) == style]


async def open_diff(pilot, key: str = "ctrl+d") -> DiffScreen:  # type: ignore[no-untyped-def]
    return await open_screen(pilot, key, DiffScreen, "the diff view")


async def test_ctrl_d_shows_the_current_pane_s_reply_beside_the_next_one_and_arrows_pick_the_other(
    tmp_path: Path,
) -> None:
    async with make_app(tmp_path).run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await send_and_wait(pilot, "which film", 1)
        view = await open_diff(pilot)
        assert "Diff · turn 1 · Tiny 100M ⟷ Mid 500M" in shown(view, "#diff-title")
        assert shown(view, "#diff-summary") == (
            "89% the same words; first difference at word 5 · 1 word only in Tiny 100M, 1 only in Mid 500M"
        )
        assert shown(view, "#diff-a").startswith("Tiny 100M\n\nThe film is Finding Nemo, a story about fish.")
        assert styled(view, "#diff-a", ONLY_HERE) == ["Nemo,"]
        assert styled(view, "#diff-b", ONLY_THERE) == ["Dory,"]
        await pilot.press("right")  # the next other pane: the big model, whose reply is the same
        assert "Tiny 100M ⟷ Big 1.5B" in shown(view, "#diff-title")
        assert shown(view, "#diff-summary") == "Identical: the same 9 words"
        assert styled(view, "#diff-a", ONLY_HERE) == []
        await pilot.press("right")  # round again, past the current pane
        assert "Tiny 100M ⟷ Mid 500M" in shown(view, "#diff-title")
        await pilot.press("left")
        assert "Tiny 100M ⟷ Big 1.5B" in shown(view, "#diff-title")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen), what="the chat screen again")
        assert "Diff two panes' replies (ctrl+d)" in [command.help for command in chat(pilot.app).palette_commands()]
        await pilot.press("alt+right")
        view = await open_diff(pilot)  # from the middle pane, the next is the big one
        assert "Mid 500M ⟷ Big 1.5B" in shown(view, "#diff-title")


async def test_a_reply_still_streaming_then_cancelled_says_so_in_one_line(tmp_path: Path) -> None:
    app = make_app(tmp_path, delays={"tiny": 30.0})  # the tiny model's first word would take 30 s
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await send(pilot, "which film")
        screen = chat(app)
        await all_answered(pilot, 1, [screen.panes["mid"], screen.panes["big"]])
        view = await open_diff(pilot)
        assert shown(view, "#diff-summary") == "Tiny 100M has no finished reply to turn 1: nothing to compare"
        assert shown(view, "#diff-b").startswith("Mid 500M\n\nThe film is Finding Dory")  # the other still shows
        await pilot.press("escape", "f8")  # cancel the tiny model's reply
        await until(pilot, lambda: answered(screen.panes["tiny"], 1), what="the reply cancelled")
        view = await open_diff(pilot)
        assert shown(view, "#diff-summary") == (
            "Tiny 100M's reply to turn 1 was cancelled before any text: nothing to compare"
        )
        assert shown(view, "#diff-a").startswith("Tiny 100M · cancelled\n")


async def test_ctrl_d_before_any_turn_or_with_one_pane_says_why_not_in_one_line(tmp_path: Path) -> None:
    app = make_app(tmp_path, cards=CARDS[:1])
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await loaded(pilot)

        def told(words: str) -> bool:
            return any(words in str(toast.render()) for toast in app.screen.query(Toast))

        await pilot.press("ctrl+d")
        await until(pilot, lambda: told("No turn yet: send one, then Ctrl+D"), what="the message")
        await send_and_wait(pilot, "which film", 1)
        await pilot.press("ctrl+d")
        await until(pilot, lambda: told("Only one pane: a diff needs two replies to compare"), what="the message")
        assert isinstance(app.screen, ChatScreen)


async def test_in_a_blind_session_the_view_names_the_panes_by_letter_only(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("ctrl+b")  # a new blind session
        await until(pilot, lambda: all(pane.hidden for pane in screen.panes.values()), what="the names hidden")
        await send_and_wait(pilot, "which film", 1)
        current = screen.grid.current_pane()
        assert current is not None and current.label.startswith("Model ")
        view = await open_diff(pilot)
        assert f"Diff · turn 1 · {current.label} ⟷ Model " in shown(view, "#diff-title")
        everything = " ".join(shown(view, part) for part in ("#diff-title", "#diff-summary", "#diff-a", "#diff-b"))
        assert not any(name in everything for name in ("Tiny", "Mid", "Big", "100M", "500M", "1.5B"))


# --- the view, from review ---------------------------------------------------------------------------


async def test_d_in_review_compares_the_saved_replies_to_the_turn_shown(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await send_and_wait(pilot, "which film", 1)
        assert app.session.transcript.path is not None
        record = load_record(app.session.transcript.path)
        review = ReviewScreen(record, Catalog(), [])
        await app.push_screen(review)
        await until(pilot, lambda: all(p.last is not None for p in review.grid.panes.values()), what="the review")
        await pilot.press("right")  # the middle pane: compared with the big model's reply
        view = await open_diff(pilot, "d")
        assert "Diff · turn 1 · Mid 500M ⟷ Big 1.5B" in shown(view, "#diff-title")
        assert styled(view, "#diff-a", ONLY_HERE) == ["Dory,"]
        assert styled(view, "#diff-b", ONLY_THERE) == ["Nemo,"]
        await pilot.press("d")  # the same key closes it
        await until(pilot, lambda: app.screen is review, what="the review again")


# --- snapshots ---------------------------------------------------------------------------------------

SNAPSHOT_REPLIES = {
    "tiny": "These emoji describe *Finding Nemo* (2003):\n\n```text\nclownfish, blue tang, ocean\n```\nA fish film.",
    "mid": "These emoji describe *Finding Dory* (2016):\n\n```text\nclownfish, blue tang, reef\n```\nA film.",
    "big": "Finding Nemo.",
}


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_diff_view_snapshot(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path, replies=SNAPSHOT_REPLIES)

    async def diff_after_one_turn(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await send_and_wait(pilot, "What movie do these emoji describe?", 1)
        await open_diff(pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=diff_after_one_turn)
