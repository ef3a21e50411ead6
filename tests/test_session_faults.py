"""Faults a session must survive without losing a turn: a sessions folder that fills up or is
read-only mid-session (real tmpfs mounts, so these need root and skip without it), a new
session begun while replies stream, Esc before a model has started its turn, and text from
files that looks like Textual markup."""

from __future__ import annotations

import asyncio
import errno
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_app import LADDER, all_answered, chat, loaded, make_app, reply_text, send
from scripted import ScriptedModel, card
from textual.widgets import Input
from textual.widgets._toast import Toast
from waiting import until

from tui.engine.events import Notice
from tui.scenario import Scenario
from tui.screens.save_elsewhere import SaveElsewhereScreen
from tui.session import Session
from tui.transcript import TranscriptError, TranscriptWriter, read_transcript
from tui.widgets.pane import ModelPane


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True, timeout=30
        )
    except OSError as error:
        pytest.skip(f"cannot run mount: {error}")
    if result.returncode != 0:
        pytest.skip(f"needs a tmpfs mount (root): {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem, so that it can be filled."""
    where = tmp_path / "small"
    mount_tmpfs(where, "size=64k,mode=0700")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A real read-only filesystem (permission bits alone do not stop root)."""
    where = tmp_path / "read-only"
    mount_tmpfs(where, "size=64k,ro")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def fill(disk: Path) -> Path:
    """Take every free block of `disk` with one file; deleting it gives the space back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"x" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def events_of(path: Path) -> list[dict]:  # type: ignore[type-arg]
    transcript = read_transcript(path)
    assert transcript.problems == []  # every line whole
    return [transcript.header, *transcript.events]


LONG = " ".join(["lengthy" * 25] * 30)  # a reply line larger than the slack in the file's last block


def long_replies(models: dict[str, ScriptedModel]) -> None:
    for model in models.values():
        model.script = lambda request, name=model.card.name: f"{name} {LONG} {request.messages[-1]['content']}"


# --- the writer on a real full or read-only filesystem ------------------------------------------


def test_a_full_disk_leaves_saved_lines_whole_and_the_events_are_written_when_space_returns(small_disk: Path) -> None:
    writer = TranscriptWriter(small_disk / "sessions", {"lineup": "offline"})
    writer.write({"type": "user", "turn": 1, "text": "saved before the disk filled"})
    assert writer.path is not None
    before = writer.path.read_bytes()
    filler = fill(small_disk)
    with pytest.raises(TranscriptError, match=re.escape(f"cannot save to {writer.path}: No space left on device")):
        writer.write({"type": "reply", "turn": 1, "model": "tiny", "status": "done", "text": LONG})
    assert writer.path.read_bytes() == before  # the part the kernel took was cut back off
    assert len(writer.pending) == 1
    filler.unlink()
    writer.write({"type": "user", "turn": 2, "text": "after"})
    writer.close()
    assert writer.pending == [] and writer.failure is None
    assert [e.get("text") for e in events_of(writer.path)[1:]] == ["saved before the disk filled", LONG, "after"]


def test_a_read_only_folder_raises_one_clear_error_and_the_session_can_be_saved_elsewhere(
    read_only_disk: Path, tmp_path: Path
) -> None:
    writer = TranscriptWriter(read_only_disk, {"lineup": "offline"})
    with pytest.raises(TranscriptError, match=re.escape(f"cannot save to {read_only_disk}: Read-only file system")):
        writer.write({"type": "user", "turn": 1, "text": "hello"})
    with pytest.raises(TranscriptError):
        writer.write({"type": "reply", "turn": 1, "model": "tiny", "status": "done", "text": "hi"})
    assert writer.path is None and len(writer.pending) == 2
    path = writer.save_elsewhere(tmp_path / "elsewhere")
    writer.close()
    header, *events = events_of(path)
    assert header["lineup"] == "offline" and [e["text"] for e in events] == ["hello", "hi"]


# --- the app when its sessions folder fills up mid-session -------------------------------------


def full_disk_app(small_disk: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    app, models = make_app(tmp_path, sessions_dir=small_disk / "sessions")
    long_replies(models)
    return app, models


async def test_the_app_keeps_running_when_the_disk_fills_and_saves_the_whole_session_elsewhere(
    small_disk: Path, tmp_path: Path
) -> None:
    app, _ = full_disk_app(small_disk, tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send(pilot, "first")
        await all_answered(pilot, 1)
        screen = chat(app)
        assert not screen.query_one("#saving-line").display
        original = app.session.transcript.path
        fill(small_disk)
        await send(pilot, "second")
        await all_answered(pilot, 2)
        line = screen.query_one("#saving-line")
        assert line.display and "No space left on device" in str(line.render())
        assert reply_text(screen.panes["big"], 2).endswith("second")  # shown, and kept in memory:
        assert app.session.conversation.replies["big"][2].endswith("second")
        saved = events_of(original)  # nothing saved before is damaged
        assert [e["type"] for e in saved[:5]] == ["session", "user", "reply", "reply", "reply"]
        # The user line may still fit in the file's last block; the long replies cannot.
        pending = app.session.transcript.pending
        assert [e["type"] for e in saved[5:] + pending] == ["user", "reply", "reply", "reply"] and len(pending) >= 3

        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SaveElsewhereScreen), what="the save-elsewhere dialog")
        app.screen.query_one("#folder", Input).value = str(tmp_path / "elsewhere")
        await pilot.press("enter")
        await until(pilot, lambda: not line.display)
        await send(pilot, "third")
        await all_answered(pilot, 3)
    moved = app.session.transcript.path
    assert moved is not None and moved.parent == tmp_path / "elsewhere"
    header, *events = events_of(moved)
    assert [m["id"] for m in header["models"]] == ["tiny", "mid", "big"]
    assert [(e["type"], e["turn"]) for e in events] == [
        ("user", 1),
        *[("reply", 1)] * 3,
        ("user", 2),
        *[("reply", 2)] * 3,
        ("user", 3),
        *[("reply", 3)] * 3,
    ]
    assert app.unsaved_on_exit is None


async def test_a_read_only_sessions_folder_does_not_crash_the_app_on_enter(
    read_only_disk: Path, tmp_path: Path
) -> None:
    app, _ = make_app(tmp_path, sessions_dir=read_only_disk / "sessions")
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send(pilot, "hello")
        await all_answered(pilot, 1)
        line = chat(app).query_one("#saving-line")
        reason = f"cannot save to {read_only_disk / 'sessions'}: Read-only file system"
        assert line.display and reason in str(line.render())
        assert reply_text(chat(app).panes["tiny"], 1).endswith("hello")
        assert [e["type"] for e in app.session.transcript.pending] == ["user", "reply", "reply", "reply"]


async def test_the_app_saves_the_waiting_turns_once_space_returns(small_disk: Path, tmp_path: Path) -> None:
    app, _ = full_disk_app(small_disk, tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send(pilot, "first")
        await all_answered(pilot, 1)
        filler = fill(small_disk)
        await send(pilot, "second")
        await all_answered(pilot, 2)
        line = chat(app).query_one("#saving-line")
        assert line.display
        await pilot.press("ctrl+r")  # still full: the line stays
        await pilot.pause()
        assert line.display and len(app.session.transcript.pending) >= 3
        filler.unlink()
        await pilot.press("ctrl+r")
        await until(pilot, lambda: not line.display)
        assert app.session.transcript.pending == []
        events = events_of(app.session.transcript.path)
        assert [(e["type"], e.get("turn")) for e in events[-4:]] == [("user", 2), *[("reply", 2)] * 3]


async def test_leaving_with_unsaved_turns_warns_first_and_says_what_was_lost(small_disk: Path, tmp_path: Path) -> None:
    app, _ = full_disk_app(small_disk, tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await loaded(pilot)
        await send(pilot, "first")
        await all_answered(pilot, 1)
        fill(small_disk)
        await send(pilot, "second")
        await all_answered(pilot, 2)

        def warned(again: str) -> bool:
            return any(again in str(toast.render()) for toast in app.screen.query(Toast))

        await pilot.press("f4")  # a new session would drop the unsaved turn: warned, nothing happens
        await until(pilot, lambda: warned("F4 again"), what="the warning")
        assert chat(app).panes["tiny"].turn_view(2) is not None and len(app.session.conversation.user_turns) == 2
        await pilot.press("ctrl+q")  # warned again, for quitting
        await until(pilot, lambda: warned("Ctrl+Q again"), what="the warning")
        assert app.is_running and chat(app).panes["tiny"].turn_view(2) is not None
        unsaved = len(app.session.transcript.pending)
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running)
    assert unsaved >= 3 and app.unsaved_on_exit is not None
    assert app.unsaved_on_exit.startswith(f"{unsaved} event(s) of this session were not saved: cannot save to ")
    assert app.unsaved_on_exit.endswith("No space left on device")


# --- a new session while replies stream (F4, F6) ------------------------------------------------


@pytest.mark.parametrize("how", ["f4", "scenario"])
async def test_replies_ending_after_a_new_session_began_are_not_saved_in_it(tmp_path: Path, how: str) -> None:
    """F4 or a scenario picked (F6) while replies stream: the old turn's late replies go into
    neither the new transcript nor the new history, whose header is whole and whose file is
    named after the new session."""
    app, models = make_app(tmp_path, delay=0.05)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        screen = chat(app)
        await send(pilot, "old question here")
        await until(pilot, lambda: all(p.state == "streaming" for p in screen.panes.values()))
        old = app.session.transcript
        if how == "f4":
            await pilot.press("f4")
        else:
            await screen.start_scenario(Scenario(id="fresh-start", title="Fresh", description="A new start"))
        await until(pilot, lambda: all(m.state == "ready" for m in models.values()))
        for model in models.values():
            model.delay = 0.0
        await send(pilot, "new question")
        await all_answered(pilot, 1)
        assert all("old question" not in reply_text(p, 1) for p in screen.panes.values())
    new = app.session.transcript.path
    assert new is not None and new != old.path
    assert new.name.endswith("-new-question.jsonl" if how == "f4" else "-fresh-start.jsonl")
    assert sorted(new.parent.iterdir()) == sorted([new, old.path])  # no third, headless file
    header, *events = events_of(new)
    assert [m["id"] for m in header["models"]] == ["tiny", "mid", "big"] and header["params"]["temperature"] == 0.7
    assert (header["scenario"] or {}).get("id") == (None if how == "f4" else "fresh-start")
    assert [(e["type"], e["turn"]) for e in events] == [("user", 1), *[("reply", 1)] * 3]
    assert all(e["text"].endswith("new question") for e in events)
    assert all(
        list(replies) == [1] and replies[1].endswith("new question")
        for replies in app.session.conversation.replies.values()
    )


# --- Esc before the model has started its turn ---------------------------------------------------


async def test_a_cancel_before_the_model_starts_its_turn_cancels_the_reply(tmp_path: Path) -> None:
    model = ScriptedModel(card("tiny", 100_000_000))
    session = Session([model], sessions_dir=tmp_path)
    await session.load()
    turn = session.start_turn("hello")
    await session.cancel()  # the model is not busy yet: on its own it would ignore this
    events = [event async for event in session.answer(model, turn)]
    assert [(e.status, e.finish_reason) for e in events] == [("cancelled", "cancelled")]
    assert model.requests == []
    await session.close()
    assert session.transcript.path is not None
    reply = events_of(session.transcript.path)[-1]
    assert (reply["type"], reply["status"], reply["turn"]) == ("reply", "cancelled", 1)


async def test_escape_while_a_turn_is_on_its_way_to_the_model_cancels_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn has left the model's queue but the model is not busy yet (the pane is still
    being set up): Esc then must cancel it, not let it run to the end."""
    gate, held = asyncio.Event(), []
    begin = ModelPane.begin

    async def held_begin(self: ModelPane, turn: int, prompt: str):  # type: ignore[no-untyped-def]
        held.append(self.card.id)
        await gate.wait()
        return await begin(self, turn, prompt)

    monkeypatch.setattr(ModelPane, "begin", held_begin)
    app, models = make_app(tmp_path, delay=0.05)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send(pilot, "hold this turn")
        await until(pilot, lambda: len(held) == len(LADDER))
        await pilot.press("escape")
        gate.set()
        panes = chat(app).panes.values()
        await until(pilot, lambda: all(p.state == "cancelled" for p in panes))
        assert all(model.requests == [] for model in models.values())
    replies = [e for e in events_of(app.session.transcript.path) if e["type"] == "reply"]
    assert sorted((e["model"], e["status"]) for e in replies) == [
        ("big", "cancelled"),
        ("mid", "cancelled"),
        ("tiny", "cancelled"),
    ]


# --- text from files is never markup -------------------------------------------------------------

MARKUP = "odd [/x] name [@click=app.quit] [b]"


async def test_markup_in_file_names_scenarios_and_notices_is_shown_literally(tmp_path: Path) -> None:
    """A file name in a problem, a scenario's title and description, a model's name and a
    notice (from GGUF metadata) holding "[/x]" or "[@click=…]" are shown as written."""
    odd = card("odd", 100_000_000, f"Model {MARKUP}")
    app, models = make_app(tmp_path, cards=[odd])
    app.config.problems = [f"{MARKUP}.yaml: not a scenario"]
    scenario = Scenario(id="odd", title=f"Title {MARKUP}", description=f"Described {MARKUP}", first_turn="go")
    turn = ScriptedModel.turn

    async def noticed_turn(self: ScriptedModel, request):  # type: ignore[no-untyped-def]
        yield Notice(f"Notice {MARKUP}")
        async for event in turn(self, request):
            yield event

    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await loaded(pilot)
        models["odd"].turn = noticed_turn.__get__(models["odd"])  # type: ignore[method-assign]
        await chat(app).start_scenario(scenario)
        await until(pilot, lambda: chat(app).panes["odd"].state == "done")
        assert app.is_running
        shown = [str(toast.render()) for toast in app.screen.query(Toast)]
        assert any(f"{MARKUP}.yaml: not a scenario" in text for text in shown)
        assert any(f"Title {MARKUP}" in text and f"Described {MARKUP}" in text for text in shown)
        assert any(f"Model {MARKUP}" in text and f"Notice {MARKUP}" in text for text in shown)
        assert f"Described {MARKUP}" in str(chat(app).query_one("#scenario-line").render())
