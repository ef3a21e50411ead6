"""The chat app driven as a person would, through Textual's pilot: scripted models for
the fast tests, the real SmolLM2-135M model end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from chat_app import (
    LADDER,
    all_answered,
    answered,
    chat,
    errors_in,
    loaded,
    make_app,
    open_settings,
    reply_text,
    save_settings,
    send,
    send_and_wait,
    transcript_events,
)
from rich.console import Console
from scripted import card
from textual.app import App, ComposeResult
from textual.widgets import Input, Select, TextArea
from waiting import until

from tui.app import AppConfig, LadderApp
from tui.cards import load_catalog
from tui.checks import CheckResult, Score
from tui.engine.events import Finished, FirstToken, PromptReady, SamplingParams, TextPiece
from tui.engine.local import Engine
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen, keys_table
from tui.screens.scenarios import ScenarioScreen
from tui.session import Checked
from tui.widgets.grid import PaneGrid
from tui.widgets.pane import ModelPane


async def test_a_turn_streams_into_every_pane_in_size_order(tmp_path: Path) -> None:
    app, models = make_app(tmp_path, delay=0.01)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        panes = list(screen.query(ModelPane))
        assert [pane.card.id for pane in panes] == ["tiny", "mid", "big"]  # left to right
        assert [pane.region.x for pane in panes] == sorted(pane.region.x for pane in panes)
        await send_and_wait(pilot, "hello ladder", 1)
        for pane in panes:
            assert reply_text(pane, 1) == f"{pane.card.name} answers: hello ladder"
            assert pane.state == "done" and "tok" in str(pane.footer.render())
        assert screen.query_one("#composer", TextArea).text == ""
    events = transcript_events(app)
    assert [e["type"] for e in events] == ["session", "user", "reply", "reply", "reply"]
    assert {e["model"] for e in events if e["type"] == "reply"} == {"tiny", "mid", "big"}


async def test_a_pane_shows_a_reply_from_its_events() -> None:
    class PaneApp(App[None]):
        def compose(self) -> ComposeResult:
            yield PaneGrid()

    app = PaneApp()
    async with app.run_test(size=(120, 30)) as pilot:
        grid = app.query_one(PaneGrid)
        pane = ModelPane(card("tiny", 100_000_000, "Tiny 100M"))
        await grid.add("tiny", pane)
        pane.show_ready((0, 4096))
        await pane.begin(1, "hello")
        assert pane.state == "thinking"
        await pane.apply(PromptReady(prompt_tokens=12, cached_tokens=0))
        await pane.apply(FirstToken(ttft_s=0.1))
        await pane.apply(TextPiece("Hi", tokens=1))
        await pane.apply(TextPiece(" there", tokens=2))
        assert pane.state == "streaming" and pane.live_tokens == 3 and pane.context == (12, 4096)
        pane.flush()  # the chat screen's tick shows the text held, and the live numbers twice a second
        pane.refresh_footer()
        assert reply_text(pane, 1) == "Hi there" and "3 tok" in str(pane.footer.render())
        done = Finished("done", "stop", "Hi there", prompt_tokens=12, completion_tokens=3, ttft_s=0.1, tokens_per_s=9.5)
        await pane.apply(done)
        score = Score()
        score.add(CheckResult("answer", True, "right"))
        await pane.apply(Checked(CheckResult("answer", True, "right"), score))
        await pilot.pause()
        assert pane.state == "done" and pane.streaming is None and pane.last == done
        assert str(pane.turn_view(1).stats.render()) == "stop · 3 tok · TTFT 0.10s · 9.5 t/s"
        assert "✓ right" in str(pane.turn_view(1).query(".check").first().render())
        assert "score 1/1" in str(pane.header.render()) and "✓ done" in str(pane.header.render())
        assert str(pane.footer.render()) == "TTFT 0.10s · 9.5 t/s · 3 tok · ctx 12/4096"
        await pane.begin(2, "a turn of a session since left")
        await pane.drop_reply()
        assert pane.turn_view(2) is None and pane.state == "ready"


async def test_escape_cancels_every_reply_and_f8_only_the_current_pane(tmp_path: Path) -> None:
    app, models = make_app(tmp_path, delay=0.2)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        panes = screen.panes
        await send(pilot, "one two")
        await until(pilot, lambda: all(pane.state == "streaming" for pane in panes.values()), what="every reply")
        await pilot.press("escape")
        await all_answered(pilot, 1)
        assert {pane.state for pane in panes.values()} == {"cancelled"}
        assert panes["tiny"].turn_view(1).has_class("-cancelled")

        await send(pilot, "again and again and again and again")
        await until(pilot, lambda: all(pane.state == "streaming" for pane in panes.values()), what="every reply")
        await pilot.press("f8")  # the current pane is the first, the smallest model
        await until(pilot, lambda: answered(panes["tiny"], 2), what="the tiny model's reply cancelled")
        assert panes["tiny"].state == "cancelled"
        assert panes["big"].state == "streaming"
        await pilot.press("escape")
        await all_answered(pilot, 2)
    replies = [e for e in transcript_events(app) if e["type"] == "reply"]
    assert {(e["turn"], e["model"], e["status"]) for e in replies} >= {
        (1, "tiny", "cancelled"),
        (2, "tiny", "cancelled"),
    }
    assert all(e["status"] == "cancelled" for e in replies if e["turn"] == 1)


async def test_zoom_shows_one_pane_and_back(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)

        def shown() -> list[str]:
            return [pane.card.id for pane in screen.query(ModelPane) if pane.display]

        await pilot.press("alt+right")
        await pilot.press("f5")
        await until(
            pilot,
            lambda: shown() == ["mid"] and screen.panes["mid"].region.width > 150,
            what="the mid pane alone, full width",
        )
        await pilot.press("f5")
        await until(pilot, lambda: shown() == ["tiny", "mid", "big"], what="every pane again")


async def test_narrow_terminal_shows_one_pane_with_a_switcher(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        assert [pane.card.id for pane in screen.query(ModelPane) if pane.display] == ["tiny"]
        assert screen.query_one("#switcher").display
        await pilot.press("alt+right", "alt+right")
        assert [pane.card.id for pane in screen.query(ModelPane) if pane.display] == ["big"]
        await send_and_wait(pilot, "hi", 1)
        assert reply_text(screen.panes["big"], 1).endswith("hi")


async def test_settings_change_applies_to_the_next_turn_and_is_recorded(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send_and_wait(pilot, "first", 1)
        settings = await open_settings(pilot)
        settings.query_one("#param-temperature", Input).value = "0.2"
        settings.query_one("#param-seed", Input).value = "99"
        settings.query_one("#system", TextArea).text = "Be terse."
        settings.query_one("#scope", Select).value = "big"
        await until(pilot, lambda: settings.scope == "big", what="the big model's own parameters")
        settings.query_one("#param-max_tokens", Input).value = "3"
        await save_settings(pilot)
        assert "temp 0.2" in str(chat(app).query_one("#settings-line").render())
        await send_and_wait(pilot, "second turn here", 2)
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


async def test_cancelling_the_settings_dialog_changes_nothing(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        settings = await open_settings(pilot)
        settings.query_one("#param-temperature", Input).value = "0.2"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="the dialog closed")
        assert app.session.params.temperature == 0.7
        assert "temp 0.7" in str(chat(app).query_one("#settings-line").render())


async def test_a_model_that_fails_to_load_shows_why_and_the_rest_answer(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, failing="mid")
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        failed = screen.panes["mid"]
        assert failed.state == "error"
        assert "the file is damaged" in str(failed.turns.query(".error").first().render())
        await send(pilot, "still there?")
        await all_answered(pilot, 1, [screen.panes["tiny"], screen.panes["big"]])
        assert reply_text(screen.panes["tiny"], 1) and reply_text(screen.panes["big"], 1)
        assert failed.turn_view(1) is None


async def test_an_unexpected_failure_while_loading_ends_in_that_pane_not_in_a_stuck_load(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)

    async def load_that_breaks(progress=None) -> None:  # type: ignore[no-untyped-def]
        models["mid"].state = "loading"
        raise RuntimeError("bad value(s) in fds_to_keep")

    models["mid"].load = load_that_breaks  # type: ignore[method-assign]
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        failed = screen.panes["mid"]
        assert failed.state == "error"
        assert "could not start" in str(failed.turns.query(".error").first().render())
        await send(pilot, "still there?")
        await all_answered(pilot, 1, [screen.panes["tiny"], screen.panes["big"]])
        assert reply_text(screen.panes["tiny"], 1) and reply_text(screen.panes["big"], 1)


async def test_model_text_cannot_reach_the_terminal_raw(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        models["tiny"].script = lambda request: "evil \x1b]0;pwned\x07 \x1b[2J done"
        await send(pilot, "x")
        await all_answered(pilot, 1, [screen.panes["tiny"]])
        source = reply_text(screen.panes["tiny"], 1)
        assert "\x1b" not in source and "\x07" not in source and "␛]0;pwned␇" in source


async def test_adding_a_model_mid_session_gives_it_the_history(tmp_path: Path) -> None:
    newcomer = card("new", 300_000_000, "New 300M")
    app, models = make_app(tmp_path, cards=LADDER[:2])
    app.config.catalog.cards["new"] = newcomer
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        await send_and_wait(pilot, "remember seven", 1)
        await chat(app).apply_models([*LADDER[:2], newcomer])
        await loaded(pilot)
        assert [p.card.id for p in chat(app).query(ModelPane)] == ["tiny", "new", "big"]
        await send_and_wait(pilot, "what number", 2)
    history = models["new"].requests[0].messages
    # The newcomer sees the first turn, answered by the largest model, then the new turn.
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == "Big 1.5B answers: remember seven"
    assert any(e["type"] == "models" and e["added"][0]["id"] == "new" for e in transcript_events(app))


async def test_new_session_starts_a_new_transcript(tmp_path: Path) -> None:
    app, models = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        await send_and_wait(pilot, "first session", 1)
        first = app.session.transcript.path
        await pilot.press("f4")
        await until(
            pilot, lambda: all(pane.turn_view(1) is None for pane in screen.panes.values()), what="the panes emptied"
        )
        await send_and_wait(pilot, "second session", 1)
        assert app.session.transcript.path != first
        assert models["tiny"].requests[-1].messages == [{"role": "user", "content": "second session"}]


async def test_every_action_is_in_the_palette_and_the_help(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {
            "Cancel all",
            "Cancel pane",
            "Zoom",
            "Sync scroll",
            "Settings",
            "Models",
            "New session",
            "Save elsewhere",
            "Retry saving",
            "Help",
            "Previous pane",
            "Next pane",
        } <= titles
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        console = Console(record=True, width=100)
        console.print(keys_table(ChatScreen.BINDINGS))
        text = console.export_text()
        assert "Esc" in text and "Cancel all" in text and "F5" in text and "Enter" in text and "Alt+→" in text


@pytest.mark.model
async def test_end_to_end_with_the_real_smallest_model(tmp_path: Path) -> None:
    catalog = load_catalog()
    engine = Engine()
    cards = [catalog.cards["smollm2-135m-instruct"]]
    config = AppConfig(
        catalog=catalog,
        cards=cards,
        make_backend=engine.model,
        sessions_dir=tmp_path,
        params=SamplingParams(max_tokens=12, seed=1, temperature=0.0),
    )
    app = LadderApp(config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await loaded(pilot, timeout=60)
        pane = screen.panes["smollm2-135m-instruct"]
        assert pane.state == "ready", errors_in(pane)
        await send(pilot, "What is the capital of France?")
        await until(pilot, lambda: answered(pane, 1), timeout=60, what="the real model's reply")
        assert pane.state == "done" and reply_text(pane, 1), errors_in(pane)
        reply = transcript_events(app)[-1]
        assert reply["type"] == "reply" and reply["status"] == "done"
        assert reply["text"] == reply_text(pane, 1).strip()


async def test_picking_a_scenario_starts_it_and_items_are_checked_and_scored(tmp_path: Path) -> None:
    from tui.scenario import load_scenarios

    app, models = make_app(tmp_path)
    app.config.scenarios, _ = load_scenarios()
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot)
        models["big"].script = lambda request: "```\n" + request.messages[-1]["content"] + "\n```"
        await pilot.press("f6")
        await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), what="the scenario list")
        titles = [str(option.prompt) for option in app.screen.query_one("OptionList").options]
        await pilot.press(*["down"] * next(i for i, t in enumerate(titles) if "Linux terminal" in t), "enter")
        await until(pilot, lambda: app.screen is screen and app.session.scenario is not None, what="the scenario")
        await all_answered(pilot, 1)
        assert app.session.scenario.id == "linux-terminal"
        assert "Pretend to be a Linux terminal" in str(screen.query_one("#scenario-line").render())
        assert models["tiny"].requests[-1].messages[-1] == {"role": "user", "content": "pwd"}  # the first turn
        assert models["tiny"].requests[-1].messages[0]["content"].startswith("I want you to act as a Linux terminal")
        await pilot.press("f7")  # the first item: ls -la
        big, tiny = screen.panes["big"], screen.panes["tiny"]
        await until(
            pilot,
            lambda: all(answered(pane, 2) and pane.turn_view(2).query(".check") for pane in screen.panes.values()),
            what="every reply to the item checked",
        )
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
