"""The chat app asks a base model a scenario's items few-shot, as the lab does (a setting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from chat_app import (
    loaded,
    make_app,
    open_settings,
    save_settings,
    send_and_wait,
    transcript_events,
)
from scripted import ScriptedModel, card
from textual.widgets import Checkbox

from tui.conversation import FEW_SHOT_NOTICE
from tui.engine.events import Finished
from tui.scenario import load_scenarios
from tui.session import Session


def _session(tmp_path: Path, few_shot: bool = True) -> tuple[Session, ScriptedModel, ScriptedModel]:
    scenario = load_scenarios()[0]["emoji-movie"]
    base = ScriptedModel(replace(card("base-270m", 270_000_000), instruct=False))
    chat = ScriptedModel(card("chat-135m", 135_000_000))
    session = Session([base, chat], sessions_dir=tmp_path, scenario=scenario, few_shot=few_shot)
    return session, base, chat


async def _ask_next_item(session: Session) -> list[Finished]:
    await session.load()
    item = session.next_item()
    return [event async for _, event in session.send(item.prompt, item) if isinstance(event, Finished)]


async def test_a_base_model_gets_a_few_shot_prompt_and_an_instruct_model_the_chat(tmp_path: Path) -> None:
    session, base, chat = _session(tmp_path)
    finished = await _ask_next_item(session)
    asked = session.items[1].prompt
    prompt = base.requests[0].completion
    assert prompt is not None and prompt.endswith(f"Q: {asked}\nA:")
    assert prompt.count("Q: ") == 4 and prompt.count(asked) == 1  # three solved films, then the one asked
    assert base.requests[0].stop and not base.requests[0].messages
    assert chat.requests[0].completion is None and chat.requests[0].messages[-1]["content"] == asked
    assert any(FEW_SHOT_NOTICE in event.notices for event in finished)
    replies = [json.loads(line) for line in session.transcript.path.read_text().splitlines()[1:]]
    forms = {reply["model"]: reply.get("form") for reply in replies if reply["type"] == "reply"}
    assert forms == {"base-270m": "few-shot", "chat-135m": None}


async def test_the_setting_off_asks_a_base_model_in_chat_form_and_is_saved(tmp_path: Path) -> None:
    session, base, _ = _session(tmp_path)
    session.change_settings(few_shot=False)
    await _ask_next_item(session)
    assert base.requests[0].completion is None and base.requests[0].messages
    header = json.loads(session.transcript.path.read_text().splitlines()[0])
    assert header["few_shot"] is False


@pytest.mark.model
def test_gemma_base_answers_an_emoji_film_few_shot_instead_of_echoing_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tui", "ask", "--scenario", "emoji-movie", "--items", "2"]
        + ["--model", "gemma-3-270m", "--sessions-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    replies = [event for event in events if event["type"] == "reply"]
    assert len(replies) == 2 and all(reply["form"] == "few-shot" for reply in replies)
    # Asked in chat form, this base model repeats the question; few-shot, it names a film on one line.
    assert all("emoji" not in reply["text"].lower() and "\n" not in reply["text"] for reply in replies), replies


async def test_the_settings_dialog_turns_few_shot_off_and_the_transcript_records_it(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send_and_wait(pilot, "first", 1)
        assert app.session.few_shot
        settings = await open_settings(pilot)
        settings.query_one("#few-shot", Checkbox).value = False
        await save_settings(pilot)
        assert not app.session.few_shot
    change = next(event for event in transcript_events(app) if event["type"] == "settings")
    assert change["few_shot"] is False
