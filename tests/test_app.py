"""The chat app driven as a person would, through Textual's pilot: scripted models for
the fast tests, the real SmolLM2-135M model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input, Select, TextArea

from scripted import ScriptedModel, card
from tui.app import AppConfig, LadderApp
from tui.cards import Catalog, load_catalog
from tui.engine.events import SamplingParams
from tui.engine.local import Engine
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen, keys_table
from tui.widgets.pane import ModelPane

LADDER = [card("big", 1_500_000_000, "Big 1.5B"), card("tiny", 100_000_000, "Tiny 100M"),
          card("mid", 500_000_000, "Mid 500M")]


def make_app(tmp_path: Path, *, delay: float = 0.0, failing: str | None = None,
             cards: list = LADDER, sessions_dir: Path | None = None,  # type: ignore[type-arg]
             ) -> tuple[LadderApp, dict[str, ScriptedModel]]:
    models: dict[str, ScriptedModel] = {}

    def make_backend(c):  # type: ignore[no-untyped-def]
        models[c.id] = ScriptedModel(c, delay=delay, load_error="the file is damaged" if c.id == failing else None)
        return models[c.id]

    config = AppConfig(catalog=Catalog(cards={c.id: c for c in cards}), cards=cards, make_backend=make_backend,
                       sessions_dir=sessions_dir or tmp_path / "sessions", lineup="scripted")
    return LadderApp(config), models


def chat(app: LadderApp) -> ChatScreen:
    assert isinstance(app.screen, ChatScreen)
    return app.screen


def reply_text(pane: ModelPane, turn: int) -> str:
    view = pane.turn_view(turn)
    return view.reply.source if view else ""


def transcript_events(app: LadderApp) -> list[dict]:  # type: ignore[type-arg]
    path = app.session.transcript.path
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()]


async def send(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.click("#composer")
    for char in text:
        await pilot.press(char if char != " " else "space")
    await pilot.press("enter")


async def test_a_turn_streams_into_every_pane_in_size_order(tmp_path: Path) -> None:
    app, models = make_app(tmp_path, delay=0.01)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        screen = chat(app)
        panes = list(screen.query(ModelPane))
        assert [pane.card.id for pane in panes] == ["tiny", "mid", "big"]  # left to right
        assert [pane.region.x for pane in panes] == sorted(pane.region.x for pane in panes)
        await send(pilot, "hello ladder")
        await pilot.pause(0.6)
        for pane in panes:
            assert reply_text(pane, 1) == f"{pane.card.name} answers: hello ladder"
            assert pane.state == "done" and "tok" in str(pane.footer.render())
        assert screen.query_one("#composer", TextArea).text == ""
    events = transcript_events(app)
    assert [e["type"] for e in events] == ["session", "user", "reply", "reply", "reply"]
    assert {e["model"] for e in events if e["type"] == "reply"} == {"tiny", "mid", "big"}


async def test_escape_cancels_every_reply_and_f8_only_the_current_pane(tmp_path: Path) -> None:
    app, models = make_app(tmp_path, delay=0.2)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        screen = chat(app)
        await send(pilot, "one two")
        await pilot.pause(0.5)
        await pilot.press("escape")
        await pilot.pause(0.5)
        assert {pane.state for pane in screen.panes.values()} == {"cancelled"}
        assert screen.panes["tiny"].turn_view(1).has_class("-cancelled")

        await send(pilot, "again and again and again and again")
        await pilot.pause(0.5)
        await pilot.press("f8")  # the current pane is the first, the smallest model
        await pilot.pause(0.3)
        assert screen.panes["tiny"].state == "cancelled"
        assert screen.panes["big"].state == "streaming"
        await pilot.press("escape")
        await pilot.pause(0.4)
    replies = [e for e in transcript_events(app) if e["type"] == "reply"]
    assert {(e["turn"], e["model"], e["status"]) for e in replies} >= {(1, "tiny", "cancelled"), (2, "tiny", "cancelled")}
    assert all(e["status"] == "cancelled" for e in replies if e["turn"] == 1)


async def test_zoom_shows_one_pane_and_back(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        screen = chat(app)
        await pilot.press("alt+right")
        await pilot.press("f5")
        await pilot.pause(0.1)
        shown = [pane.card.id for pane in screen.query(ModelPane) if pane.display]
        assert shown == ["mid"] and screen.panes["mid"].region.width > 150
        await pilot.press("f5")
        await pilot.pause(0.1)
        assert all(pane.display for pane in screen.query(ModelPane))


async def test_narrow_terminal_shows_one_pane_with_a_switcher(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        screen = chat(app)
        assert [pane.card.id for pane in screen.query(ModelPane) if pane.display] == ["tiny"]
        assert screen.query_one("#switcher").display
        await pilot.press("alt+right", "alt+right")
        assert [pane.card.id for pane in screen.query(ModelPane) if pane.display] == ["big"]
        await send(pilot, "hi")
        await pilot.pause(0.3)
        assert reply_text(screen.panes["big"], 1).endswith("hi")


async def test_settings_change_applies_to_the_next_turn_and_is_recorded(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        await send(pilot, "first")
        await pilot.pause(0.3)
        await pilot.press("f2")
        await pilot.pause(0.2)
        settings = app.screen
        settings.query_one("#param-temperature", Input).value = "0.2"
        settings.query_one("#param-seed", Input).value = "99"
        settings.query_one("#system", TextArea).text = "Be terse."
        settings.query_one("#scope", Select).value = "big"
        await pilot.pause(0.1)
        settings.query_one("#param-max_tokens", Input).value = "3"
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ChatScreen)
        assert "temp 0.2" in str(app.screen.query_one("#settings-line").render())
        await send(pilot, "second turn here")
        await pilot.pause(0.4)
    assert models["tiny"].requests[0].params.temperature == 0.7
    second = models["tiny"].requests[1]
    assert second.params.temperature == 0.2 and second.params.seed == 99
    assert second.messages[0] == {"role": "system", "content": "Be terse."}
    assert models["big"].requests[1].params.max_tokens == 3 and models["tiny"].requests[1].params.max_tokens == 512
    events = transcript_events(app)
    change = next(e for e in events if e["type"] == "settings")
    assert change["params"]["temperature"] == 0.2 and change["model_params"] == {"big": {"max_tokens": 3}}
    replies = {(e["turn"], e["model"]): e for e in events if e["type"] == "reply"}
    assert replies[(2, "tiny")]["params"]["temperature"] == 0.2 and replies[(1, "tiny")]["params"]["temperature"] == 0.7
    assert replies[(2, "big")]["params"]["max_tokens"] == 3


async def test_a_model_that_fails_to_load_shows_why_and_the_rest_answer(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, failing="mid")
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        screen = chat(app)
        failed = screen.panes["mid"]
        assert failed.state == "error"
        assert "the file is damaged" in str(failed.turns.query(".error").first().render())
        await send(pilot, "still there?")
        await pilot.pause(0.3)
        assert reply_text(screen.panes["tiny"], 1) and reply_text(screen.panes["big"], 1)
        assert failed.turn_view(1) is None


async def test_an_unexpected_failure_while_loading_ends_in_that_pane_not_in_a_stuck_load(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)

    async def load_that_breaks(progress=None) -> None:  # type: ignore[no-untyped-def]
        models["mid"].state = "loading"
        raise RuntimeError("bad value(s) in fds_to_keep")

    models["mid"].load = load_that_breaks  # type: ignore[method-assign]
    async with app.run_test(size=(200, 50)) as pilot:
        failed = chat(app).panes["mid"]
        for _ in range(50):
            if failed.state == "error":
                break
            await pilot.pause(0.05)
        assert failed.state == "error"
        assert "could not start" in str(failed.turns.query(".error").first().render())
        await send(pilot, "still there?")
        for _ in range(50):
            if reply_text(chat(app).panes["big"], 1):
                break
            await pilot.pause(0.05)
        assert reply_text(chat(app).panes["tiny"], 1) and reply_text(chat(app).panes["big"], 1)


async def test_model_text_cannot_reach_the_terminal_raw(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        models["tiny"].script = lambda request: "evil \x1b]0;pwned\x07 \x1b[2J done"
        await send(pilot, "x")
        await pilot.pause(0.3)
        source = reply_text(chat(app).panes["tiny"], 1)
        assert "\x1b" not in source and "\x07" not in source and "␛]0;pwned␇" in source


async def test_adding_a_model_mid_session_gives_it_the_history(tmp_path: Path) -> None:
    newcomer = card("new", 300_000_000, "New 300M")
    app, models = make_app(tmp_path, cards=LADDER[:2])
    app.config.catalog.cards["new"] = newcomer
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        await send(pilot, "remember seven")
        await pilot.pause(0.3)
        await chat(app).apply_models([*LADDER[:2], newcomer])
        await pilot.pause(0.3)
        assert [p.card.id for p in chat(app).query(ModelPane)] == ["tiny", "new", "big"]
        await send(pilot, "what number")
        await pilot.pause(0.3)
    history = models["new"].requests[0].messages
    # The newcomer sees the first turn, answered by the largest model, then the new turn.
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == "Big 1.5B answers: remember seven"
    assert any(e["type"] == "models" and e["added"][0]["id"] == "new" for e in transcript_events(app))


async def test_new_session_starts_a_new_transcript(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        await send(pilot, "first session")
        await pilot.pause(0.3)
        first = app.session.transcript.path
        await pilot.press("f4")
        await pilot.pause(0.2)
        assert chat(app).panes["tiny"].turn_view(1) is None
        await send(pilot, "second session")
        await pilot.pause(0.3)
        assert app.session.transcript.path != first
        assert models["tiny"].requests[-1].messages == [{"role": "user", "content": "second session"}]


async def test_every_action_is_in_the_palette_and_the_help(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Cancel all", "Cancel pane", "Zoom", "Sync scroll", "Settings", "Models", "New session",
                "Save elsewhere", "Retry saving", "Help"} <= titles
        await pilot.press("f1")
        await pilot.pause(0.1)
        assert isinstance(app.screen, HelpScreen)
        console = Console(record=True, width=100)
        console.print(keys_table(ChatScreen.BINDINGS))
        text = console.export_text()
        assert "Esc" in text and "Cancel all" in text and "F5" in text and "Enter" in text and "Alt+→" in text


@pytest.mark.usefixtures("offline_models")
async def test_end_to_end_with_the_real_smallest_model(tmp_path: Path) -> None:
    catalog = load_catalog()
    engine = Engine()
    cards = [catalog.cards["smollm2-135m-instruct"]]
    config = AppConfig(catalog=catalog, cards=cards, make_backend=engine.model, sessions_dir=tmp_path,
                       params=SamplingParams(max_tokens=12, seed=1, temperature=0.0))
    app = LadderApp(config)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = chat(app).panes["smollm2-135m-instruct"]
        for _ in range(100):
            await pilot.pause(0.1)
            if pane.state == "ready":
                break
        assert pane.state == "ready"
        await send(pilot, "What is the capital of France?")
        for _ in range(100):
            await pilot.pause(0.1)
            if pane.state == "done":
                break
        assert pane.state == "done" and reply_text(pane, 1)
        reply = transcript_events(app)[-1]
        assert reply["type"] == "reply" and reply["status"] == "done"
        assert reply["text"] == reply_text(pane, 1).strip()


async def test_picking_a_scenario_starts_it_and_items_are_checked_and_scored(tmp_path: Path) -> None:
    from tui.scenario import load_scenarios

    app, models = make_app(tmp_path)
    app.config.scenarios, _ = load_scenarios()
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause(0.2)
        models["big"].script = lambda request: "```\n" + request.messages[-1]["content"] + "\n```"
        await pilot.press("f6")
        await pilot.pause(0.2)
        titles = [str(option.prompt) for option in app.screen.query_one("OptionList").options]
        await pilot.press(*["down"] * next(i for i, t in enumerate(titles) if "Linux terminal" in t), "enter")
        await pilot.pause(0.5)
        screen = chat(app)
        assert app.session.scenario.id == "linux-terminal"
        assert "Pretend to be a Linux terminal" in str(screen.query_one("#scenario-line").render())
        assert models["tiny"].requests[-1].messages[-1] == {"role": "user", "content": "pwd"}  # the first turn
        assert models["tiny"].requests[-1].messages[0]["content"].startswith("I want you to act as a Linux terminal")
        await pilot.press("f7")  # the first item: ls -la
        await pilot.pause(0.5)
        big, tiny = screen.panes["big"], screen.panes["tiny"]
        assert "score 2/2" in str(big.header.render()) and "score 0/2" in str(tiny.header.render())
        assert "✓ only a code block" in str(big.turn_view(2).query(".check").first().render())
        assert "✗ broke character" in str(tiny.turn_view(2).query(".check").first().render())
    events = transcript_events(app)
    assert app.session.transcript.path.name.endswith("-linux-terminal.jsonl")
    assert events[0]["scenario"]["id"] == "linux-terminal"
    asked = [e for e in events if e["type"] == "user" and "item" in e]
    assert asked[0]["item"]["prompt"] == "ls -la"
    checks = {(e["turn"], e["model"]): e["check"]["passed"] for e in events if e["type"] == "reply"}
    assert checks[(2, "big")] is True and checks[(2, "tiny")] is False
