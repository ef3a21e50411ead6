"""The Lab screen driven as a person would, through Textual's pilot, on scripted models: opening
it, a whole run filling the tables and charts, Esc mid-run keeping every finished row, exports,
and the refusals (a chat reply streaming, bad input)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chat_app import LADDER, loaded, make_app, send
from scripted import ScriptedModel
from textual.command import CommandPalette
from textual.widgets import Button, DataTable, Input, ProgressBar, SelectionList, TabbedContent
from textual.widgets._toast import Toast
from waiting import until

from tui.app import LadderApp
from tui.engine.events import TurnRequest
from tui.lab.tasks import DEFAULT_TASKS
from tui.scenario import load_scenarios
from tui.screens.chat import ChatScreen
from tui.screens.lab import LabScreen
from tui.widgets.session_lines import where_saved

TWO_MODELS = [LADDER[1], LADDER[0]]  # tiny (100M), big (1.5B)
TASKS = ["arithmetic", "emoji-movie-choices"]


def arithmetic_whiz(request: TurnRequest) -> str:
    """Right on every sum and product it is asked (the last one in the prompt), and picks C."""
    asked = request.completion if request.completion is not None else request.messages[-1]["content"]
    sums = re.findall(r"What is (\d+) ([+*]) (\d+)\?", asked)
    if not sums:
        return "C"
    a, op, b = sums[-1]
    return str(int(a) + int(b) if op == "+" else int(a) * int(b))


def lab_app(tmp_path: Path, delay: float = 0.0) -> tuple[LadderApp, dict[str, ScriptedModel]]:
    app, models = make_app(tmp_path, cards=TWO_MODELS, delay=delay)
    app.config.scenarios, _ = load_scenarios()
    return app, models


async def open_lab(pilot) -> LabScreen:  # type: ignore[no-untyped-def]
    await loaded(pilot)
    await pilot.press("ctrl+l")
    await until(pilot, lambda: isinstance(pilot.app.screen, LabScreen), what="the Lab screen")
    return pilot.app.screen


async def start(pilot, lab: LabScreen, tasks: list[str], items: int) -> None:  # type: ignore[no-untyped-def]
    selection = lab.query_one("#lab-tasks", SelectionList)
    selection.deselect_all()
    for task in tasks:
        selection.select(task)
    lab.query_one("#lab-items", Input).value = str(items)
    button = lab.query_one("#lab-start", Button)
    # A button ignores clicks while it shows the last one (a fraction of a second), as for a person.
    await until(pilot, lambda: not button.has_class("-active") and not button.disabled, what="Start clickable")
    await pilot.click("#lab-start")


async def from_palette(pilot, command: str) -> None:  # type: ignore[no-untyped-def]
    """Run `command` from the command palette, typed as a person would."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the command palette")
    await pilot.press(*command)

    def first_hit() -> str:
        hits = app.screen.query_one("CommandList")
        return str(hits.get_option_at_index(0).prompt) if hits.option_count else ""

    await until(pilot, lambda: first_hit().startswith(command), what=f"{command} in the palette")
    await pilot.press("enter")


def status(lab: LabScreen) -> str:
    return str(lab.query_one("#lab-status").render())


def problem(lab: LabScreen) -> str:
    return str(lab.query_one("#lab-problem").render())


def file_rows(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [record for line in path.read_text().splitlines() if (record := json.loads(line))["type"] == "row"]


def told(app: LadderApp, message: str) -> bool:
    """Whether a notification on screen says `message`."""
    return any(message in str(toast.render()) for toast in app.screen.query(Toast))


def table_rows(lab: LabScreen, task: str) -> list[list[str]]:
    table = lab.views[task][0]
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


async def chart_of(pilot, lab: LabScreen, task: str) -> str:  # type: ignore[no-untyped-def]
    """The chart of `task` as drawn once its tab is shown."""
    chart = lab.views[task][1]
    assert chart.parent is not None and chart.parent.id is not None
    lab.query_one(TabbedContent).active = chart.parent.id
    await until(pilot, lambda: chart.content_size.height > 0, what=f"the chart of {task} shown")
    return str(chart.render())


async def finished(pilot, lab: LabScreen, total: int) -> None:  # type: ignore[no-untyped-def]
    await until(
        pilot,
        lambda: lab.runner is None and status(lab).startswith(f"Done: {total}/{total} items"),
        what=f"the run to reach {total}/{total}",
    )


async def test_ctrl_l_and_the_palette_open_the_lab_and_esc_closes_it(tmp_path: Path) -> None:
    app, _ = lab_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        lab = await open_lab(pilot)
        listed = [str(lab.query_one("#lab-tasks", SelectionList).get_option_at_index(n).value) for n in range(8)]
        assert listed[:5] == list(DEFAULT_TASKS)
        assert {"chain-of-thought", "bias", "proverbs"} <= set(listed)  # every task the lab accepts is offered
        assert sorted(lab.query_one("#lab-tasks", SelectionList).selected) == sorted(DEFAULT_TASKS)
        assert lab.query_one("#lab-items", Input).value == "20"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="back to the chat")

        await from_palette(pilot, "Lab")
        await until(pilot, lambda: isinstance(app.screen, LabScreen), what="the Lab screen from the palette")


async def test_a_run_fills_a_table_and_a_chart_per_task_and_saves_every_row(tmp_path: Path) -> None:
    app, models = lab_app(tmp_path)
    models["big"].script = arithmetic_whiz
    async with app.run_test(size=(120, 40)) as pilot:
        lab = await open_lab(pilot)
        await start(pilot, lab, TASKS, 3)
        await finished(pilot, lab, 12)
        bar = lab.query_one("#lab-progress", ProgressBar)
        assert (bar.progress, bar.total) == (12, 12)
        assert lab.file is not None and lab.file.path.parent == tmp_path / "sessions" / "lab"
        assert re.fullmatch(r"lab-\d{8}-\d{6}\.jsonl", lab.file.path.name)
        assert len(file_rows(lab.file.path)) == 12
        arithmetic = table_rows(lab, "arithmetic")
        assert [row[:4] for row in arithmetic] == [
            ["Tiny 100M", "100M", "chat", "3"],
            ["Big 1.5B", "1.5B", "chat", "3"],
        ]
        assert arithmetic[0][4].startswith("0% (") and arithmetic[1][4].startswith("100% (")
        assert arithmetic[0][6] == "—"  # no pick: not multiple choice
        assert "too few items" in arithmetic[0][8]
        choices = table_rows(lab, "emoji-movie-choices")
        assert [row[0] for row in choices] == ["Tiny 100M", "Big 1.5B"] and choices[1][6].endswith("%")
        drawn = await chart_of(pilot, lab, "arithmetic")
        assert "Tiny 100M" in drawn and "Big 1.5B" in drawn and "● exact" in drawn and "○ probability" in drawn
    assert all(request.params.temperature == 0.0 for request in models["tiny"].requests)


async def test_escape_mid_run_stops_keeps_the_rows_and_start_resumes_the_same_file(tmp_path: Path) -> None:
    app, models = lab_app(tmp_path, delay=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        lab = await open_lab(pilot)
        await start(pilot, lab, TASKS, 3)
        assert lab.file is not None
        path = lab.file.path
        await until(pilot, lambda: len(lab.file.rows) >= 2, what="two rows written")
        assert re.fullmatch(r"\d+/12 items( · \d+:\d\d left)? · model (Tiny 100M|Big 1\.5B) [1-6]/6", status(lab))
        await pilot.press("escape")
        await until(pilot, lambda: lab.runner is None, what="the run stopped")
        assert isinstance(app.screen, LabScreen)  # Esc stopped the run; it did not close the screen
        saved = len(file_rows(path))
        assert 2 <= saved < 12
        assert status(lab) == f"Stopped: {saved} rows saved in {where_saved(path)} · Start resumes"

        for model in models.values():
            model.delay = 0.0
        await start(pilot, lab, TASKS, 3)  # the same settings: the same file, only what is missing
        await finished(pilot, lab, 12)
        assert lab.file.path == path and len(file_rows(path)) == 12

        await start(pilot, lab, ["arithmetic"], 3)  # another task list: a new file
        await finished(pilot, lab, 6)
        assert lab.file.path != path and len(file_rows(lab.file.path)) == 6


async def test_the_lab_refuses_to_start_while_a_chat_reply_streams(tmp_path: Path) -> None:
    app, _ = lab_app(tmp_path, delay=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = await loaded(pilot)
        await send(pilot, "a long answer please")
        await until(pilot, lambda: all(p.state == "streaming" for p in chat.panes.values()), what="the replies")
        lab = await open_lab(pilot)
        await start(pilot, lab, TASKS, 3)
        await until(pilot, lambda: "A chat reply is streaming" in problem(lab), what="the refusal")
        assert lab.runner is None and lab.file is None
        assert not (tmp_path / "sessions" / "lab").exists()


async def test_bad_items_or_no_task_say_so_in_one_line(tmp_path: Path) -> None:
    app, _ = lab_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        lab = await open_lab(pilot)
        await start(pilot, lab, TASKS, 0)
        await until(pilot, lambda: problem(lab).startswith("Items: a whole number of at least 1"), what="items")
        await start(pilot, lab, [], 3)
        await until(pilot, lambda: problem(lab) == "Pick at least one task.", what="no task")
        assert lab.runner is None and lab.file is None


async def test_s_and_m_export_the_chart_and_summary_next_to_the_results(tmp_path: Path) -> None:
    app, _ = lab_app(tmp_path)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        lab = await open_lab(pilot)
        await from_palette(pilot, "Export SVG")
        await until(pilot, lambda: told(app, "Nothing to export yet: Start a run first"), what="nothing to export")
        await start(pilot, lab, TASKS, 3)
        await finished(pilot, lab, 12)
        lab.query_one(DataTable).focus()  # keys go to the screen, not to the items box
        await pilot.press("s", "m")
        assert lab.file is not None
        svg, markdown = lab.file.path.with_suffix(".svg"), lab.file.path.with_suffix(".md")
        await until(pilot, lambda: svg.exists() and markdown.exists(), what="both exports")
        assert svg.read_text().startswith("<svg") and "Big 1.5B" in svg.read_text()
        assert "|" in markdown.read_text() and "arithmetic" in markdown.read_text()
        assert told(app, f"The charts (SVG) saved in {where_saved(svg)}")
        assert told(app, f"The summary (Markdown) saved in {where_saved(markdown)}")


async def test_the_lab_chart_names_both_models_in_an_80x24_terminal(tmp_path: Path) -> None:
    app, models = lab_app(tmp_path)
    models["big"].script = arithmetic_whiz
    async with app.run_test(size=(80, 24)) as pilot:
        lab = await open_lab(pilot)
        await start(pilot, lab, ["arithmetic"], 3)
        await finished(pilot, lab, 6)
        drawn = await chart_of(pilot, lab, "arithmetic")
        assert "Tiny 100M" in drawn and "Big 1.5B" in drawn


async def test_a_model_that_failed_is_marked_failed_and_the_other_finishes(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, cards=TWO_MODELS, failing="big")
    app.config.scenarios, _ = load_scenarios()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        lab = await open_lab(pilot)
        await start(pilot, lab, ["arithmetic"], 3)
        await until(
            pilot,
            lambda: lab.runner is None and status(lab).startswith("Done: 3/3 items · 1 model(s) failed"),
            what="the run, one model failed",
        )
        assert told(app, "Big 1.5B failed: the file is damaged")
        rows = table_rows(lab, "arithmetic")
        assert [(row[0], row[3], row[8]) for row in rows] == [
            ("Tiny 100M", "3", "too few items"),
            ("Big 1.5B", "0", "failed: the file is damaged"),
        ]


async def test_a_task_with_variants_has_a_row_and_a_line_per_variant(tmp_path: Path) -> None:
    app, _ = lab_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        lab = await open_lab(pilot)
        await start(pilot, lab, ["chain-of-thought"], 2)
        await finished(pilot, lab, 8)
        table = lab.views["chain-of-thought"][0]
        assert [str(column.label) for column in table.columns.values()][:2] == ["Model", "Variant"]
        assert [row[:2] for row in table_rows(lab, "chain-of-thought")] == [
            ["Tiny 100M", "plain"],
            ["Big 1.5B", "plain"],
            ["Tiny 100M", "step by step"],
            ["Big 1.5B", "step by step"],
        ]
        assert "● exact · plain" in str(lab.views["chain-of-thought"][1].legend())
        assert "■ exact · step by step" in str(lab.views["chain-of-thought"][1].legend())
