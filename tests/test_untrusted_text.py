"""Text read from files is shown as it is, never read as Textual markup: a saved transcript
whose names, finish reasons, notes and event types hold "[/x]" (which Textual's markup
parser refuses: the app crashed) or "[@click=app.quit]" (an action: a click quit the app)
opens in the sessions list, in review and in the panes, and shows those words literally.
Model names from a GGUF file's metadata reach the models and settings screens the same way."""

from __future__ import annotations

import json
from pathlib import Path

from chat_app import loaded
from rich.text import Text
from scripted import card
from test_sessions_app import make_app
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, SelectionList, Static
from textual.widgets._toast import Toast
from waiting import until

from tui.cards import card_from_record
from tui.engine.events import Finished, TextPiece
from tui.screens.chat import ChatScreen
from tui.screens.models import ModelsScreen
from tui.screens.review import NoteScreen, ReviewScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.settings import SettingsScreen
from tui.widgets.grid import PaneGrid
from tui.widgets.pane import ModelPane

CLOSE = "[/x]"  # a closing tag that matches nothing: Textual's markup parser raises
CLICK = "[@click=app.quit]quit[/]"  # markup that would make the words a button that quits
HOSTILE = f"{CLOSE} {CLICK}"
# A file name cannot hold "/": the transcript's name carries the action and an opening tag.
FILE_STEM = "2026-11-28-101503-[@click=app.quit]hostile[b]"


def plain(widget: object) -> str:
    return str(widget.render())  # type: ignore[attr-defined]


def write_hostile_transcript(folder: Path, model_id: str = f"evil{CLOSE}") -> Path:
    """`model_id`: a model the app knows (to resume the session), or by default one it does not."""
    folder.mkdir(parents=True, exist_ok=True)
    model = {
        "id": model_id,
        "name": f"Evil {HOSTILE}",
        "family": f"Fam{CLOSE}",
        "params": 100_000_000,
        "quant": f"Q{CLOSE}",
        "size": 50_000_000,
        "context": 2048,
    }
    params = {"temperature": 0.7} if model_id == "tiny" else {"temperature": 0.7, f"odd{CLOSE}": HOSTILE}
    header = {
        "type": "session",
        "format": 1,
        "created": "2026-11-28T10:15:03+00:00",
        "lineup": f"lineup {HOSTILE}",
        "models": [model],
        "params": params,
        "model_params": {},
        "system": f"system {HOSTILE}",
        "replay_of": f"old {HOSTILE}",
        "scenario": {"id": f"scenario{CLOSE}", "title": f"Title {HOSTILE}"},
    }
    events = [
        {"type": "user", "turn": 1, "text": f"hostile prompt {HOSTILE}"},
        {
            "type": "reply",
            "turn": 1,
            "model": model["id"],
            "status": "done",
            "finish_reason": f"stop{CLOSE}",
            "text": f"a reply {HOSTILE}",
            "completion_tokens": 3,
            "notices": [f"notice {HOSTILE}"],
            "check": {"kind": "answer", "passed": False, "reason": f"reason {HOSTILE}"},
        },
        {"type": "mark", "turn": 1, "model": model["id"], "best": True},
        {"type": "note", "turn": 1, "model": model["id"], "text": f"note {HOSTILE}"},
        {"type": "user", "turn": 2, "text": "second"},
        {
            "type": "reply",
            "turn": 2,
            "model": model["id"],
            "status": "error",
            "finish_reason": CLOSE,
            "text": "",
            "error": f"error {HOSTILE}",
        },
        {"type": f"event{CLOSE}"},  # an unknown event type, named in the problem shown
    ]
    path = folder / f"{FILE_STEM}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in [header, *events]), encoding="utf-8")
    return path


async def test_a_transcript_full_of_markup_lists_opens_and_reviews_literally(tmp_path: Path) -> None:
    write_hostile_transcript(tmp_path / "sessions")
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:  # toasts shown, as for a person
        await loaded(pilot)
        await pilot.press("ctrl+o")
        sessions = app.screen
        assert isinstance(sessions, SessionsScreen)
        table = sessions.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 1)
        app.export_screenshot()  # every widget rendered: markup in a cell would raise here
        cells = [str(cell) for cell in table.get_row_at(0)]
        assert cells[1:3] == [f"scenario{CLOSE}", f"lineup {HOSTILE}"] and cells[4] == f"hostile prompt {HOSTILE}"
        sessions.query_one("#query", Input).value = "hostile"
        await until(pilot, lambda: sessions.listed == "hostile")
        assert plain(sessions.query_one("#preview")) == f"turn 1 · user: hostile prompt {HOSTILE}"
        sessions.set_focus(table)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
        review = app.screen
        assert isinstance(review, ReviewScreen)
        await until(pilot, lambda: review.grid.panes and next(iter(review.grid.panes.values())).last is not None)
        await pilot.pause()
        app.export_screenshot()
        assert plain(review.query_one("#title")).startswith(f"Ladder · review · {FILE_STEM} · 2 turns")
        assert f"Title {HOSTILE} · replay of old {HOSTILE}" in plain(review.query_one("#title"))
        assert f"system {HOSTILE}" in plain(review.query_one("#settings-line"))
        assert f"odd{CLOSE} {HOSTILE}" in plain(review.query_one("#settings-line"))
        pane = review.grid.panes[f"evil{CLOSE}"]
        assert plain(pane.header).startswith(f"Evil {HOSTILE}\n100M · Q{CLOSE} · 50 MB · Fam{CLOSE}")
        first, second = pane.turn_view(1), pane.turn_view(2)
        assert first is not None and second is not None
        assert plain(first.stats).startswith(f"stop{CLOSE} · 3 tok")
        shown = [plain(widget) for widget in first.query(Static)]
        for text in (
            f"▶ hostile prompt {HOSTILE}",
            f"ⓘ notice {HOSTILE}",
            f"✗ reason {HOSTILE}",
            f"★ best\n✎ note {HOSTILE}",
        ):
            assert text in shown
        assert f"a reply {HOSTILE}" in first.reply.source  # the reply itself is Markdown, on purpose
        assert f"✗ error {HOSTILE}" in [plain(widget) for widget in second.query(Static)]
        assert plain(second.stats).startswith("error · 0 tok")
        problem = f"{FILE_STEM}.jsonl: unknown event type(s) event{CLOSE}; left out"
        await until(pilot, lambda: any(problem in plain(toast) for toast in app.screen.query(Toast)))
        app.export_screenshot()
        # A note on a model whose name is markup, and the replay dialog titled with the file name.
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NoteScreen))
        await pilot.pause()
        app.export_screenshot()
        assert f"on Evil {HOSTILE}'s reply to turn 1" in plain(app.screen.query_one("Label"))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is review)
        await pilot.press("ctrl+y")
        await until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        await pilot.pause()
        app.export_screenshot()
        assert plain(app.screen.query_one("Label")).startswith(f"Replay {FILE_STEM} to · ")
        assert app.is_running


async def test_resuming_a_transcript_full_of_markup_shows_its_turns_literally(tmp_path: Path) -> None:
    write_hostile_transcript(tmp_path / "sessions", model_id="tiny")
    app, _ = make_app(tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+o")
        sessions = app.screen
        assert isinstance(sessions, SessionsScreen)
        await until(pilot, lambda: sessions.query_one(DataTable).row_count == 1)
        sessions.set_focus(sessions.query_one(DataTable))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.resumed is not None)
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        pane = chat.panes["tiny"]
        await until(pilot, lambda: pane.turn_view(2) is not None and pane.state == "ready")
        await pilot.pause()
        app.export_screenshot()
        first = pane.turn_view(1)
        assert plain(first.stats).startswith(f"stop{CLOSE} · 3 tok")
        assert f"★ best\n✎ note {HOSTILE}" in [plain(widget) for widget in first.query(Static)]
        assert f"✗ error {HOSTILE}" in [plain(widget) for widget in pane.turn_view(2).query(Static)]
        assert app.is_running


async def test_panes_show_a_live_reply_with_markup_in_its_numbers_and_names_literally() -> None:
    """The chat screen's panes get names from GGUF metadata and finish reasons and errors from
    the engine: the header, the numbers under a reply and the switcher of a narrow grid."""
    evil = card_from_record({"id": "evil", "name": f"Evil{CLOSE} {CLICK}", "family": f"Fam{CLOSE}"})

    class PaneApp(App[None]):
        def compose(self) -> ComposeResult:
            yield PaneGrid()

    app = PaneApp()
    async with app.run_test(size=(30, 20)) as pilot:  # narrower than two panes: the switcher shows
        grid = app.query_one(PaneGrid)
        pane = ModelPane(evil)
        await grid.add("evil", pane)
        await grid.add("other", ModelPane(card_from_record({"id": "other", "params": 1})))
        await pane.begin(1, f"prompt {HOSTILE}")
        await pane.apply(TextPiece(f"text {HOSTILE}"))
        await pane.apply(
            Finished(
                status="done",
                finish_reason=f"length{CLOSE}",
                text=f"text {HOSTILE}",
                completion_tokens=2,
                notices=[f"notice {HOSTILE}"],
            )
        )
        pane.show_error(f"load failed {HOSTILE}")
        pane.overrides = f"temperature={CLOSE}"
        pane.state = "done"
        await pilot.pause()
        app.export_screenshot()
        view = pane.turn_view(1)
        assert view is not None and f"text {HOSTILE}" in view.reply.source
        assert plain(view.stats).startswith(f"length{CLOSE} · 2 tok")
        assert plain(pane.header).startswith(f"Evil{CLOSE} {CLICK}\n")
        assert f"temperature={CLOSE}" in plain(pane.header)
        assert f"✗ load failed {HOSTILE}" in [plain(widget) for widget in pane.query(".error")]
        assert f"Evil{CLOSE}" in plain(grid.query_one("#switcher"))


async def test_models_and_settings_show_model_names_from_files_literally(tmp_path: Path) -> None:
    """A card made from a GGUF file takes its name from the file's metadata."""
    cards = [card("evil", 100_000_000, f"Evil {HOSTILE}")]
    app, _ = make_app(tmp_path, cards=cards)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        await pilot.pause()
        app.export_screenshot()
        options = app.screen.query_one(SelectionList)
        assert any(f"Evil {HOSTILE}" in str(options.get_option_at_index(n).prompt) for n in range(options.option_count))
        await pilot.press("escape")
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        settings = app.screen
        await pilot.pause()
        select = settings.query_one("#scope")
        select.focus()
        await pilot.press("enter")  # the list of scopes, with the model's name, opens
        await pilot.pause()
        app.export_screenshot()
        assert any(isinstance(prompt, Text) and prompt.plain == f"Evil {HOSTILE}" for prompt, _ in select._options)  # type: ignore[attr-defined]
        await pilot.press("escape")
        settings.query_one("#param-temperature", Input).value = CLOSE  # what a person may type
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.export_screenshot()
        assert plain(settings.query_one(".problem")) == f"temperature must be a number, not '{CLOSE}'"
        assert app.is_running
