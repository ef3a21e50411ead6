"""The sessions screen and what it leads to, driven through the pilot with scripted
models: find a session by a word from a reply, open it side by side, mark and note,
resume it, replay it to other models; and resume with the real SmolLM2 model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from chat_app import all_answered, answered, errors_in, loaded
from scripted import ScriptedModel, card
from textual import events
from textual.widgets import DataTable, Input, SelectionList
from waiting import until

from tui import archive
from tui.app import AppConfig, LadderApp
from tui.cards import Catalog, load_catalog
from tui.engine.events import SamplingParams
from tui.engine.local import Engine
from tui.history import load_record
from tui.screens.chat import ChatScreen
from tui.screens.models import ModelsScreen
from tui.screens.review import NoteScreen, ReviewScreen
from tui.screens.sessions import SessionsScreen, parse_query

CARDS = [card("tiny", 100_000_000, "Tiny 100M"), card("big", 1_000_000_000, "Big 1B")]


def make_app(tmp_path: Path, cards: list = CARDS, scripts: dict | None = None):  # type: ignore[no-untyped-def, type-arg]
    models: dict[str, ScriptedModel] = {}
    scripts = scripts or {}

    def backend(c):  # type: ignore[no-untyped-def]
        models[c.id] = ScriptedModel(c, script=scripts.get(c.id))
        return models[c.id]

    catalog = Catalog(cards={c.id: c for c in cards + [card("newcomer", 500_000_000, "Newcomer 500M")]})
    config = AppConfig(
        catalog=catalog, cards=cards, make_backend=backend, sessions_dir=tmp_path / "sessions", lineup="scripted"
    )
    return LadderApp(config), models


async def type_and_send(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.click("#composer")
    await pilot.press(*[c if c != " " else "space" for c in text], "enter")


async def record_sessions(tmp_path: Path) -> None:
    """Two saved sessions, the first with a distinctive word in a reply."""
    scripts = {"big": lambda r: "The answer involves a platypus." if "animal" in r.messages[-1]["content"] else "No."}
    app, _ = make_app(tmp_path, scripts=scripts)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await type_and_send(pilot, "name an odd animal")
        await all_answered(pilot, 1)
        await pilot.press("f4")
        await type_and_send(pilot, "something else entirely")
        await all_answered(pilot, 1)
    assert len(list((tmp_path / "sessions").glob("*.jsonl"))) == 2


async def open_sessions(pilot, query: str = "") -> SessionsScreen:  # type: ignore[no-untyped-def]
    """Open the sessions screen (Ctrl+O) and wait for the list of sessions found by `query`."""
    await loaded(pilot)
    await pilot.press("ctrl+o")
    await until(
        pilot,
        lambda: isinstance(pilot.app.screen, SessionsScreen) and pilot.app.screen.listed == "",
        what="the list of sessions",
    )
    sessions = pilot.app.screen
    if query:
        sessions.query_one("#query", Input).value = query
        await until(pilot, lambda: sessions.listed == query, what=f"the sessions found by {query!r}")
    return sessions


def review_shown(app: LadderApp) -> bool:
    """Whether a review screen shows every saved reply."""
    screen = app.screen
    return (
        isinstance(screen, ReviewScreen)
        and len(screen.grid.panes) == len(screen.record.models)
        and all(pane.last is not None for pane in screen.grid.panes.values())
    )


def test_search_query_parsing() -> None:
    assert parse_query("platypus model:big since:2026-01-01") == ("platypus", {"model": "big", "since": "2026-01-01"})
    assert parse_query("") == (None, {})


async def test_find_a_session_by_a_word_from_a_reply_open_mark_and_note(tmp_path: Path) -> None:
    await record_sessions(tmp_path)
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        sessions = await open_sessions(pilot)
        table = sessions.query_one(DataTable)
        assert table.row_count == 2
        sessions.query_one("#query", Input).value = "platypus"
        await until(pilot, lambda: sessions.listed == "platypus", what="the sessions found")
        assert table.row_count == 1
        assert "platypus" in str(sessions.query_one("#preview").render())
        table.focus()
        await pilot.press("enter")
        await until(pilot, lambda: review_shown(app), what="the session side by side")
        review = app.screen
        assert isinstance(review, ReviewScreen)
        assert [p.card.id for p in review.grid.ordered()] == ["tiny", "big"]
        assert "platypus" in review.grid.panes["big"].turn_view(1).reply.source

        def marks() -> str:
            found = review.grid.panes["big"].turn_view(1).query(".mark")
            return str(found.first().render()) if found else ""

        await pilot.press("right", "b")  # mark the big model's reply best
        await until(pilot, lambda: "★ best" in marks(), what="the reply marked best")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NoteScreen), what="the note dialog")
        await pilot.press(*"good one", "enter")
        await until(pilot, lambda: "good one" in marks(), what="the note shown")
        assert "★ best" in marks()
        path = review.record.path
    saved = load_record(path)
    reply = saved.turns[0].replies["big"]
    assert reply.best and reply.notes == ["good one"]
    assert [json.loads(line)["type"] for line in path.read_text().splitlines()][-2:] == ["mark", "note"]


async def test_resume_restores_history_and_appends_to_the_same_file(tmp_path: Path) -> None:
    await record_sessions(tmp_path)
    app, models = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        sessions = await open_sessions(pilot, "platypus")
        sessions.query_one(DataTable).focus()
        await pilot.press("ctrl+r")
        await until(
            pilot,
            lambda: isinstance(app.screen, ChatScreen) and app.screen.resumed is not None,
            what="the resumed session",
        )
        chat = await loaded(pilot)
        path = app.session.transcript.path
        assert "platypus" in chat.panes["big"].turn_view(1).reply.source  # the saved turn is shown
        await type_and_send(pilot, "and another")
        await all_answered(pilot, 2)
    history = models["big"].requests[-1].messages
    assert [m["content"] for m in history] == ["name an odd animal", "The answer involves a platypus.", "and another"]
    record = load_record(path)
    assert [t.text for t in record.turns] == ["name an odd animal", "and another"]
    assert record.turns[1].replies["tiny"].status == "done"


async def test_replay_sends_the_saved_turns_to_other_models_beside_the_originals(tmp_path: Path) -> None:
    await record_sessions(tmp_path)
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        source = next(p for p in (tmp_path / "sessions").glob("*.jsonl") if "platypus" in p.read_text())
        sessions = await open_sessions(pilot, "platypus")
        sessions.query_one(DataTable).focus()
        await pilot.press("ctrl+y")  # which models to replay it to: the newcomer only
        await until(pilot, lambda: isinstance(app.screen, ModelsScreen), what="the models dialog")
        cards = app.screen.query_one(SelectionList)
        cards.deselect_all()
        cards.select("newcomer")
        await pilot.click("#apply")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, ChatScreen)
                and "newcomer" in app.screen.panes
                and answered(app.screen.panes["newcomer"], 1)
            ),
            what="the newcomer's reply to the saved turn",
        )
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        assert sorted(chat.panes) == ["newcomer", "original:big", "original:tiny"]
        assert "platypus" in chat.panes["original:big"].turn_view(1).reply.source
        assert chat.panes["newcomer"].turn_view(1).reply.source.startswith("Newcomer 500M answers")
        assert [model.card.id for model in app.session.models] == ["newcomer"]
        replay_path = app.session.transcript.path
    header = json.loads(replay_path.read_text().splitlines()[0])
    assert header["replay_of"] == source.stem and replay_path != source
    assert [model["id"] for model in header["models"]] == ["newcomer"]
    assert models["newcomer"].requests[0].messages[-1]["content"] == "name an odd animal"
    assert models["tiny"].requests == [] and models["big"].requests == []  # the saved turns went to the newcomer only


@pytest.mark.model
async def test_resume_with_the_real_model_remembers_a_fact_from_turn_one(tmp_path: Path) -> None:
    catalog = load_catalog()
    cards = [catalog.cards["smollm2-135m-instruct"]]
    params = SamplingParams(temperature=0.0, max_tokens=16, seed=1)

    def config() -> AppConfig:
        engine = Engine()
        return AppConfig(catalog=catalog, cards=cards, make_backend=engine.model, sessions_dir=tmp_path, params=params)

    app = LadderApp(config())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = (await loaded(pilot, timeout=60)).panes["smollm2-135m-instruct"]
        await type_and_send(pilot, "My name is Zorblax. Please remember it.")
        await until(pilot, lambda: answered(pane, 1), timeout=60, what="the real model's first reply")
        assert pane.state == "done", errors_in(pane)
        path = app.session.transcript.path
    # A new app (a new process would do the same) resumes the saved session.
    app = LadderApp(config())
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot, timeout=60)
        await app.resume(load_record(path))
        pane = (await loaded(pilot, timeout=60)).panes["smollm2-135m-instruct"]
        await type_and_send(pilot, "What is my name?")
        await until(pilot, lambda: answered(pane, 2), timeout=60, what="the real model's reply after resuming")
        assert pane.state == "done", errors_in(pane)
    record = load_record(path)
    assert len(record.turns) == 2
    second = record.turns[1].replies["smollm2-135m-instruct"]
    assert second.status == "done"
    # The model saw turn 1 (its prompt is much longer than the new question alone) and
    # uses the fact from it.
    assert second.event["prompt_tokens"] > 40
    assert "zorblax" in second.text.lower()


def type_at_once(app: LadderApp, keys: list[str]) -> None:
    """Keys as a terminal delivers typed-ahead or pasted keys: all queued before any is handled
    (the pilot's `press` waits for each key to be handled before sending the next)."""
    for key in keys:
        app.post_message(events.Key(key, key if len(key) == 1 else "\r" if key == "enter" else None))


@pytest.mark.parametrize("held", [None, "search", "list_sessions"])
async def test_down_and_enter_right_after_typing_a_search_open_the_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: str | None
) -> None:
    """A word, ↓ and Enter typed at once used to open nothing or the wrong session: ↓ moved
    the focus to the list only later, so Enter reached the search box; and Enter acted on the
    list still showing (the whole list: the newest session opened) or on none (an empty table
    drops Enter). Here the folder is read only once the keys are in, as with a large folder:
    held at the search (the whole list is showing) or at every listing (the table is empty)."""
    await record_sessions(tmp_path)
    reading, release = threading.Event(), threading.Event()
    if held:
        real = getattr(archive, held)

        def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
            reading.set()
            release.wait(10)
            return real(*args, **kwargs)

        monkeypatch.setattr(archive, held, slow)
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+o")
        sessions = app.screen
        assert isinstance(sessions, SessionsScreen)
        table = sessions.query_one(DataTable)
        await until(pilot, lambda: reading.is_set() if held == "list_sessions" else table.row_count == 2)
        type_at_once(app, [*"platypus", "down", "enter"])
        if held:
            await until(pilot, lambda: sessions.query_one("#query", Input).value == "platypus" and reading.is_set())
            await pilot.pause()  # the keys and what they started are handled
            assert app.screen is sessions  # nothing opened from the list of another query
            release.set()
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
        review = app.screen
        assert isinstance(review, ReviewScreen)
        await until(pilot, lambda: "big" in review.grid.panes and review.grid.panes["big"].last is not None)
        assert "platypus" in review.grid.panes["big"].turn_view(1).reply.source  # type: ignore[union-attr]


async def test_a_late_result_for_an_older_query_does_not_replace_the_list_for_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each keystroke starts a search in a thread, and a cancelled thread still delivers its
    result: the search for "e" (both sessions) ends after the one for "platypus" (one)."""
    await record_sessions(tmp_path)
    older_started, older = threading.Event(), threading.Event()
    real_search = archive.search

    def search(directory, text, **filters):  # type: ignore[no-untyped-def]
        if text == "e":
            older_started.set()
            older.wait(10)
        return real_search(directory, text, **filters)

    delivered: list[object] = []
    real_show_rows = SessionsScreen.show_rows

    def show_rows(self, *args):  # type: ignore[no-untyped-def]
        delivered.append(args)
        return real_show_rows(self, *args)

    monkeypatch.setattr(archive, "search", search)
    monkeypatch.setattr(SessionsScreen, "show_rows", show_rows)
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+o")
        sessions = app.screen
        assert isinstance(sessions, SessionsScreen)
        table = sessions.query_one(DataTable)
        await until(pilot, lambda: len(delivered) == 1 and table.row_count == 2)  # the whole list
        query = sessions.query_one("#query", Input)
        query.value = "e"
        await until(pilot, older_started.is_set)
        query.value = "platypus"
        await until(pilot, lambda: len(delivered) == 2 and table.row_count == 1)
        older.set()
        await until(pilot, lambda: len(delivered) == 3)  # the late result for "e" has come in
        assert sessions.ids == [next((tmp_path / "sessions").glob("*odd-animal*")).stem]
        assert "platypus" in str(sessions.query_one("#preview").render())
