"""The Lab screen: the emergence lab (`tui.lab`) run on the chat session's own models, with live
progress, a table and a chart per task filling in as rows are scored.

Every row goes to a results file in `<sessions dir>/lab/` as it is computed, so Esc stops a run
without losing anything finished; Start with the same settings then resumes the same file, and
changed settings (tasks, items, form) start a new one. `s` and `m` export the run's chart (SVG)
and summary (Markdown) next to that file."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Input,
    Label,
    ProgressBar,
    Select,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
)

from tui import paths
from tui.cards import ModelCard
from tui.engine.base import Backend
from tui.lab.chart import lineup, series_for, svg_report
from tui.lab.report import COLUMNS, markdown_summary, table_row
from tui.lab.results import LabFile, LabFileError, lab_header
from tui.lab.runner import LabProgress, LabRunner
from tui.lab.stats import Cell, cells
from tui.lab.tasks import DEFAULT_ITEMS, DEFAULT_TASKS, FORMS, LabTask, TaskError, form_for, lab_tasks
from tui.scenario import Scenario
from tui.session import Session
from tui.textsafe import safe_text
from tui.widgets.lab_chart import LabChart
from tui.widgets.session_lines import where_saved

SEED = 0  # the command line's default: the same generated items as `ladder lab`
NUMERIC = {"n", "Exact (95% CI)", "P(right)", "Pick (MC)", "Partial"}  # of the report's COLUMNS: right-aligned
LOADING = ("waiting", "fetching", "loading")
SHORT = 30  # a terminal fewer lines high than this gets compact controls
Settings = tuple[tuple[str, ...], int, str]  # what a results file was made for: tasks, items, form


def lab_scenarios(scenarios: dict[str, Scenario]) -> list[Scenario]:
    """The scenarios the lab can score (those `lab_tasks` accepts): the default tasks first,
    in their order, then the others by id."""
    accepted = []
    for scenario in scenarios.values():
        try:
            lab_tasks([scenario.id], scenarios, 1, SEED)
        except TaskError:
            continue
        accepted.append(scenario)
    order = {task_id: n for n, task_id in enumerate(DEFAULT_TASKS)}
    return sorted(accepted, key=lambda s: (order.get(s.id, len(order)), s.id))


def clock(seconds: float) -> str:
    """151 -> "2:31"."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def results_path(folder: Path) -> Path:
    """A new results file's path: `lab-YYYYMMDD-HHMMSS.jsonl`, `-2`, `-3`… when that second is taken."""
    return paths.new_file(folder, f"lab-{datetime.now():%Y%m%d-%H%M%S}", ".jsonl")


class LabScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "stop_or_close", "Stop / Back"),
        Binding("s", "export_svg", "Export SVG"),
        Binding("m", "export_markdown", "Export Markdown"),
    ]

    def __init__(self, session: Session, scenarios: dict[str, Scenario], sessions_dir: Path) -> None:
        super().__init__()
        self.session = session  # the chat's: the lab runs on its models, while no reply streams
        self.scenarios = scenarios
        self.offered = lab_scenarios(scenarios)  # the tasks listed, in this order
        self.folder = sessions_dir / "lab"
        self.file: LabFile | None = None  # the results of the current (or last) run
        self.file_settings: Settings | None = None
        self.runner: LabRunner | None = None  # set while a run is in progress
        self.stopping = False
        self.complete = False  # the last run went through every item
        self.views: dict[str, tuple[DataTable[Text], LabChart]] = {}  # per task of the run
        self.told_failed: set[str] = set()  # models whose failure the screen has reported

    @property
    def models(self) -> list[Backend]:
        return list(self.session.models)

    def compose(self) -> ComposeResult:
        yield Static(id="lab-title")
        with Horizontal(id="lab-controls"):
            tasks = [
                (Text.assemble((safe_text(s.id), "bold"), f"  {safe_text(s.title)}"), s.id, s.id in DEFAULT_TASKS)
                for s in self.offered
            ]
            yield SelectionList[str](*tasks, id="lab-tasks")
            with Vertical(id="lab-options"):
                with Horizontal(classes="lab-option"):
                    yield Label("items", classes="lab-label")
                    yield Input(str(DEFAULT_ITEMS), id="lab-items", type="integer", compact=True)
                with Horizontal(classes="lab-option"):
                    yield Label("form", classes="lab-label")
                    forms = [("auto: few-shot for base models", "auto"), *((form, form) for form in FORMS)]
                    yield Select(forms, value="auto", allow_blank=False, id="lab-form", compact=True)
                yield Button("Start", id="lab-start", variant="primary", compact=True)
        yield Static(id="lab-problem")
        with Horizontal(id="lab-progress-line"):
            yield ProgressBar(id="lab-progress", show_eta=False)
            yield Static(id="lab-status")
        with TabbedContent(id="lab-results"):
            yield TabPane("no run yet", Static(self.welcome(), classes="lab-welcome"))
        yield Footer()

    def welcome(self) -> Text:
        count = len(self.models)
        lines = [
            "Pick tasks, items per task and the prompt form, then Start.",
            "Every model answers every item greedily; each reply is scored two ways: exact (the scenario's check)",
            "and the probability the model gives the right answer. Esc stops a run; nothing finished is lost.",
        ]
        if count < 2:
            lines.append(f"This session has {count} model{'s' if count != 1 else ''}: a curve needs two points.")
        return Text("\n".join(lines), style="dim")

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.height < SHORT, "-short")  # the controls shrink to leave the chart room

    def on_mount(self) -> None:
        self.refresh_title()
        self.query_one("#lab-tasks", SelectionList).focus()

    def refresh_title(self) -> None:
        names = ", ".join(safe_text(model.card.name) for model in self.models)
        where = where_saved(self.file.path) if self.file else f"a new file in {where_saved(self.folder)} on Start"
        self.query_one("#lab-title", Static).update(
            Text.assemble(("Lab", "bold"), f" · {len(self.models)} models: {names} · results: {where}")
        )

    def say(self, line: str) -> None:
        """One line of what went wrong (empty: nothing)."""
        self.query_one("#lab-problem", Static).update(Text(line, style="red"))
        self.query_one("#lab-problem").display = bool(line)

    def status(self, line: str) -> None:
        self.query_one("#lab-status", Static).update(Text(line))

    # --- starting a run ------------------------------------------------------------------------

    def why_not_start(self) -> str | None:
        if not self.models:
            return "This session has no models: add some (F3 in the chat), then start the lab."
        busy = [model.card.name for model in self.models if model.state == "busy"]
        if busy:
            names = safe_text(", ".join(busy))
            return f"A chat reply is streaming ({names}): start the lab when it is done, or cancel it (Esc)."
        loading = [model.card.name for model in self.models if model.state in LOADING]
        if loading:
            return f"Still loading {safe_text(', '.join(loading))}: start the lab once every model is ready."
        return None

    def wanted(self) -> tuple[list[LabTask], Settings]:
        """The tasks and settings the controls ask for; TaskError (one line) if they cannot be run."""
        selected = set(self.query_one("#lab-tasks", SelectionList).selected)
        ids = tuple(scenario.id for scenario in self.offered if scenario.id in selected)  # in the list's order
        if not ids:
            raise TaskError("Pick at least one task.")
        try:
            items = int(self.query_one("#lab-items", Input).value)
        except ValueError:
            items = 0
        if items < 1:
            raise TaskError(f"Items: a whole number of at least 1 (default {DEFAULT_ITEMS}).")
        form = str(self.query_one("#lab-form", Select).value)
        return lab_tasks(list(ids), self.scenarios, items, SEED), (ids, items, form)

    @on(Button.Pressed, "#lab-start")
    async def action_start(self) -> None:
        if self.runner is not None:
            return
        problem = self.why_not_start()
        try:
            tasks, settings = self.wanted()
        except TaskError as error:
            problem = problem or str(error)
        if problem:
            self.say(problem)
            return
        forced = None if settings[2] == "auto" else settings[2]
        cards: list[ModelCard] = [model.card for model in self.models]
        forms = {card.id: form_for(card, forced) for card in cards}
        if self.file is None or self.complete or settings != self.file_settings:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                header = lab_header(tasks, cards, forms, settings[1], SEED, self.session.engine_info)
                self.file = LabFile.create(results_path(self.folder), header)
            except (OSError, LabFileError) as error:
                self.say(f"Cannot write the results in {where_saved(self.folder)}: {error}")
                return
            self.file_settings = settings
        self.say("")
        for task in tasks:
            asked = len({item.number for item in task.items})
            if asked < settings[1]:
                self.notify(f"{safe_text(task.id)}: only {asked} items", markup=False)
        runner = self.runner = LabRunner(tasks, self.models, self.file, forms)  # set before any await: one run
        self.stopping = self.complete = False
        self.query_one("#lab-start", Button).disabled = True
        self.refresh_title()
        self.status("starting…")
        await self.show_tasks(tasks)
        self.run_worker(self.run_lab(runner), group="lab", exit_on_error=False)

    async def run_lab(self, runner: LabRunner) -> None:
        failure = None
        try:
            await runner.run(self.show_progress)
        except Exception as error:  # every finished row is saved; the screen must not die with the run
            failure = repr(error)
        finally:
            self.runner = None
        if not self.is_attached:  # the app closed mid-run
            return
        self.query_one("#lab-start", Button).disabled = False
        self.refresh_tables()
        assert self.file is not None
        if self.stopping or failure:
            saved = f"{len(self.file.rows)} rows saved in {where_saved(self.file.path)}"
            self.status(f"{'Stopped' if self.stopping else 'The run failed'}: {saved} · Start resumes")
            if failure:
                self.say(f"The lab run failed: {failure}")
            else:
                self.notify(f"Stopped: {saved}. Start resumes the run.", title="Lab", markup=False)
        else:
            self.complete = True
            progress = runner.progress()
            failed = f" · {len(self.file.failures)} model(s) failed" if self.file.failures else ""
            self.status(f"Done: {progress.done}/{progress.total} items{failed} · s: SVG charts · m: Markdown table")

    # --- showing progress and results ------------------------------------------------------------

    async def show_tasks(self, tasks: list[LabTask]) -> None:
        """A tab per task of the run, each with its table and chart, filled from the file's rows."""
        tabs = self.query_one("#lab-results", TabbedContent)
        await tabs.clear_panes()
        self.views = {}
        for n, task in enumerate(tasks):
            table: DataTable[Text] = DataTable(cursor_type="none", zebra_stripes=True, classes="lab-table")
            has_variants = any(item.variant for item in task.items)
            for column in COLUMNS:
                if column != "Variant" or has_variants:
                    table.add_column(column, key=column)
            chart = LabChart(classes="lab-chart")
            await tabs.add_pane(TabPane(safe_text(task.id), table, chart, id=f"lab-task-{n}"))
            self.views[task.id] = (table, chart)
        self.refresh_tables()

    def show_progress(self, progress: LabProgress) -> None:
        bar = self.query_one("#lab-progress", ProgressBar)
        bar.update(total=progress.total, progress=progress.done)
        parts = [f"{progress.done}/{progress.total} items"]
        if progress.left_s is not None and progress.done < progress.total:
            parts.append(f"{clock(progress.left_s)} left")
        if progress.last is not None:
            model_id = str(progress.last.get("model"))
            model_done, model_total = progress.model_done.get(model_id, (0, 0))
            parts.append(f"model {safe_text(self.model_name(model_id))} {model_done}/{model_total}")
        self.refresh_tables(None if progress.last is None else str(progress.last.get("task")))
        self.status(" · ".join(parts))
        self.tell_failures()

    def tell_failures(self) -> None:
        """Say once per model that it failed (its cells say so too, once the others have rows)."""
        assert self.file is not None
        for model_id, error in self.file.failures.items():
            if model_id not in self.told_failed:
                self.told_failed.add(model_id)
                name = safe_text(self.model_name(model_id))
                self.notify(f"{name} failed: {error}", title="Lab", severity="error", timeout=15, markup=False)

    def model_name(self, model_id: str) -> str:
        return next((model.card.name for model in self.models if model.card.id == model_id), model_id)

    def cells(self) -> list[Cell]:
        assert self.file is not None
        order = [str(model.get("id")) for model in self.file.header.get("models", [])]
        return cells(self.file.rows, self.file.failures, order)

    def refresh_tables(self, only: str | None = None) -> None:
        """Redraw the table and chart of task `only` (all tasks without it) from the file's rows."""
        if self.file is None:
            return
        every = self.cells()
        models = lineup(self.file.header, every)
        by_id = {str(model.get("id")): model for model in models}
        forms = self.file.header.get("forms", {})
        for task_id, (table, chart) in self.views.items():
            if only is not None and task_id != only:
                continue
            table.clear()
            columns = [str(column.value) for column in table.columns]
            for cell in every:
                if cell.task == task_id:
                    model = by_id.get(cell.model, {"id": cell.model})
                    values = table_row(model, forms.get(cell.model), cell.variant, cell, failure_message=True)
                    table.add_row(*(Text(values[c], justify="right" if c in NUMERIC else "left") for c in columns))
            chart.show(series_for(every, task_id, models), models)

    # --- stopping, closing, exporting ------------------------------------------------------------

    async def action_stop_or_close(self) -> None:
        if self.runner is not None:
            self.stopping = True
            self.status("stopping…")
            await self.runner.stop()
            return
        self.dismiss()

    async def on_unmount(self) -> None:
        if self.runner is not None:  # the app is closing mid-run: every finished row is on disk already
            await self.runner.stop()

    def export(self, suffix: str, what: str, make: Callable[[dict[str, Any], list[Cell]], str]) -> None:
        if self.file is None or not self.file.rows:
            self.notify("Nothing to export yet: Start a run first", severity="warning")
            return
        path = self.file.path.with_suffix(suffix)
        try:
            path.write_text(make(self.file.header, self.cells()), encoding="utf-8")
        except OSError as error:
            message = f"Cannot write {where_saved(path)}: {error}"
            self.notify(message, title="Not exported", severity="error", markup=False)
            return
        self.notify(f"{what} saved in {where_saved(path)}", title="Exported", markup=False)

    def action_export_svg(self) -> None:
        self.export(".svg", "The charts (SVG)", svg_report)

    def action_export_markdown(self) -> None:
        self.export(".md", "The summary (Markdown)", markdown_summary)

    def palette_commands(self) -> list[SystemCommand]:
        """The screen's keys in the command palette (see `LadderApp.get_system_commands`)."""
        commands = [
            SystemCommand("Start the lab run", "Start (or resume) the lab run", lambda: self.run_action("start")),
        ]
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            commands.append(
                SystemCommand(
                    binding.description,
                    f"{binding.description} ({binding.key})",
                    lambda action=binding.action: self.run_action(action),
                )
            )
        return commands
