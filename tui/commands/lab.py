"""`ladder lab`: ask every model the items of a few tasks, score each reply by the scenario's
check and by the probability of the right answer, save every row as it comes, then print each
task's table and chart. `--resume` finishes a stopped run; `--report` redraws a saved one."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tui import store
from tui.cards import Catalog, ModelCard, card_from_gguf, card_from_record, load_catalog
from tui.commands import output
from tui.commands.options import UsageError, backend_for, card_changes, checked_sessions_dir, lineup_cards
from tui.engine.schedule import available_cores
from tui.lab.results import LabFile, LabFileError, lab_header
from tui.lab.tasks import DEFAULT_ITEMS, DEFAULT_TASKS, LabTask, TaskError, form_for, lab_tasks
from tui.scenario import load_scenarios

if TYPE_CHECKING:
    from tui.engine.base import Backend
    from tui.lab.runner import LabProgress, LabRunner

ONE_MODEL = "a curve needs two points: add a model (--model) to see a trend"

# Options that say what a run asks: a resumed run takes them from its file, a report needs none.
RUN_OPTIONS = {
    "tasks": "the TASK arguments",
    "items": "--items",
    "seed": "--seed",
    "form": "--form",
    "out": "--out",
    "lineup": "--lineup",
    "model": "--model",
    "endpoint": "--endpoint",
}


@dataclass
class LabPlan:
    """A run, checked before any model loads: its tasks, models and how each is asked, and its file."""

    tasks: list[LabTask]
    cards: list[ModelCard]
    forms: dict[str, str]
    file: LabFile


def _given(args: argparse.Namespace, names: dict[str, str]) -> list[str]:
    return [option for name, option in names.items() if getattr(args, name) not in (None, [], False)]


def _refuse_with(args: argparse.Namespace, option: str, names: dict[str, str], why: str) -> None:
    given = _given(args, names)
    if given:
        raise UsageError(f"{option} {why}; leave out {', '.join(given)}")


def _open_file(path: Path, option: str) -> LabFile:
    if not path.is_file():
        raise UsageError(f"{option} {path}: no such file; give a results file that `ladder lab` wrote")
    try:
        return LabFile.open(path)
    except LabFileError as error:
        raise UsageError(f"{option}: {error}") from None


def _tasks(ids: list[str], items: int, seed: int) -> list[LabTask]:
    scenarios, problems = load_scenarios()
    for problem in problems:
        output.warn(problem)
    try:
        return lab_tasks(ids, scenarios, items, seed)
    except TaskError as error:
        raise UsageError(str(error)) from None


def _with_sha256(card: ModelCard) -> ModelCard:
    """A local card whose file has no hash given (a GGUF file named by its path), with its file's:
    the header records what was run. A file that cannot be had is left to fail when it loads."""
    if card.sha256 is not None or card.endpoint:
        return card
    progress = output.progress_printer()
    try:
        path = store.ensure_file(card, progress)
    except store.ModelUnavailable:
        return card
    return replace(card, sha256=store.file_sha256(path, progress))


def _new_plan(args: argparse.Namespace) -> LabPlan:
    items = DEFAULT_ITEMS if args.items is None else args.items
    if items < 1:
        raise UsageError(f"--items must be at least 1, not {items}")
    seed = 0 if args.seed is None else args.seed
    tasks = _tasks(args.tasks or list(DEFAULT_TASKS), items, seed)
    for task in tasks:
        asked = len({item.number for item in task.items})
        if asked < items:
            output.warn(f"task '{task.id}' has only {asked} items; asking those")
    catalog = load_catalog()
    for problem in catalog.problems:
        output.warn(problem)
    cards = [_with_sha256(card) for card in lineup_cards(args, catalog)]
    forms = {card.id: form_for(card, args.form) for card in cards}
    path = args.out or checked_sessions_dir(args.sessions_dir) / "lab" / time.strftime("lab-%Y%m%d-%H%M%S.jsonl")
    engine_info = {"schedule": args.schedule, "cores": available_cores()}
    header = lab_header(tasks, cards, forms, items, seed, engine_info)
    try:
        file = LabFile.create(path, header)
    except LabFileError as error:
        raise UsageError(str(error)) from None
    return LabPlan(tasks, cards, forms, file)


def _resumed_plan(args: argparse.Namespace) -> LabPlan:
    _refuse_with(args, "--resume", RUN_OPTIONS, "takes the tasks, items, seed, forms and models from its file")
    file = _open_file(args.resume, "--resume")
    header = file.header
    tasks = _tasks(list(header["tasks"]), int(header["items"]), int(header["seed"]))
    catalog = load_catalog()
    cards = [_resumed_card(record, catalog, args) for record in header["models"]]
    forms = {card.id: header.get("forms", {}).get(card.id) or form_for(card, None) for card in cards}
    return LabPlan(tasks, cards, forms, file)


def _resumed_card(record: dict[str, Any], catalog: Catalog, args: argparse.Namespace) -> ModelCard:
    """The card a resumed run's model has now, refused when its file is not the one the run used."""
    saved = card_from_record(record)
    if saved.endpoint:
        endpoint = replace(saved.endpoint, api_key_env=args.api_key_env, stall_timeout=args.stall_timeout)
        return replace(saved, sources=(replace(saved.sources[0], endpoint=endpoint),))
    if saved.id in catalog.cards:
        card = replace(catalog.cards[saved.id], **card_changes(args))
    elif saved.origin and Path(saved.origin).is_file():  # a GGUF file given by its path
        card = replace(card_from_gguf(Path(saved.origin)), id=saved.id, **card_changes(args))
    else:
        raise UsageError(
            f"--resume: model '{saved.id}' of the run has no card now and no file at {saved.origin or '?'}; "
            "start a new run"
        )
    card = _with_sha256(card)
    if saved.sha256 and card.sha256 and saved.sha256 != card.sha256:
        raise UsageError(
            f"--resume: model '{saved.id}' has changed since the run (sha256 {saved.sha256[:12]}… then, "
            f"{card.sha256[:12]}… now); start a new run to compare it"
        )
    return card


# --- running ---------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class ProgressLine:
    """`lab: 123/400 items, 2:31 left` on standard error: one line rewritten in place on a
    terminal, else a line each time another tenth of the run is done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.width = 0  # of the line shown, to blank what a shorter one leaves
        self.tenths = -1  # the tenths of the run printed so far

    def __call__(self, progress: LabProgress) -> None:
        text = f"lab: {progress.done}/{progress.total} items"
        if progress.left_s is not None and progress.done < progress.total:
            text += f", {_clock(progress.left_s)} left"
        if self.terminal:
            print("\r" + text.ljust(self.width), end="", file=self.stream, flush=True)
            self.width = len(text)
            return
        tenths = progress.done * 10 // progress.total if progress.total else 10
        if tenths > self.tenths:
            self.tenths = tenths
            print(text, file=self.stream, flush=True)

    def end(self) -> None:
        if self.terminal and self.width:
            print(file=self.stream, flush=True)
            self.width = 0


class Interrupts:
    """Ctrl+C: the first stops the run (everything finished is saved), a second, or one while the
    models load, stops at once."""

    def __init__(self) -> None:
        self.count = 0
        self.task = asyncio.current_task()
        self.runner: LabRunner | None = None  # set once the models are loaded

    def __call__(self) -> None:
        self.count += 1
        if self.runner is not None and self.count == 1:
            asyncio.ensure_future(self.runner.stop())
        elif self.task is not None:
            self.task.cancel()


async def _run(plan: LabPlan, args: argparse.Namespace) -> int:
    from tui.engine.local import Engine
    from tui.lab.runner import LabRunner

    engine = Engine(policy=args.schedule)
    models = [backend_for(card, engine) for card in plan.cards]
    interrupts = Interrupts()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupts)
    path = plan.file.path
    progress = ProgressLine(sys.stderr)
    runner = LabRunner(plan.tasks, models, plan.file, plan.forms)
    try:
        print(f"lab: {len(models)} model(s), results in {path}", file=sys.stderr, flush=True)
        not_loaded = await _load([model for model in models if runner.pending[model.card.id]])  # resumed: fewer
        interrupts.runner = runner
        await runner.run(progress)
    except asyncio.CancelledError:
        if not interrupts.count:
            raise
    finally:
        progress.end()
        loop.remove_signal_handler(signal.SIGINT)
        await asyncio.gather(*(model.close() for model in models))
        await engine.close()
    if interrupts.count:
        output.error(f"stopped: {len(plan.file.rows)} rows saved in {path}; resume with `ladder lab --resume {path}`")
        return 130
    for model_id, message in runner.failed.items():
        if model_id not in not_loaded:  # said as it happened
            output.error(f"{model_id} failed during the run: {message}")
    code = _report(plan.file, args, sys.stdout)
    return 1 if code == 0 and runner.failed else code


async def _load(models: list[Backend]) -> set[str]:
    """Load every model at once, saying why any failed (the runner records it and goes on);
    the ids of those that failed."""
    from tui.engine.base import ModelLoadError

    if not models:
        return set()
    print(f"loading {len(models)} model(s)…", file=sys.stderr, flush=True)
    progress = output.progress_printer()

    async def load(model: Backend) -> str | None:
        try:
            await model.load(progress)
        except ModelLoadError as error:
            output.error(f"{model.card.id}: {error}")
            return model.card.id
        return None

    return {failed for failed in await asyncio.gather(*(load(model) for model in models)) if failed}


# --- the report --------------------------------------------------------------------------------


def _report(file: LabFile, args: argparse.Namespace, out: TextIO) -> int:
    """Print the report (text, or JSON), write the --svg and --markdown files; 1 if one could not be written."""
    from tui.lab.chart import svg_report
    from tui.lab.report import markdown_summary, report_json, report_text
    from tui.lab.stats import cells

    found = cells(file.rows, file.failures, [model["id"] for model in file.header["models"]])
    print((report_json if args.json else report_text)(file.header, found), file=out)
    code = 0
    for path, make in ((args.svg, svg_report), (args.markdown, markdown_summary)):
        if path is None:
            continue
        try:
            path.write_text(make(file.header, found), encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
        except OSError as error:
            output.error(f"cannot write {path}: {error.strerror or error}")
            code = 1
    print(f"results: {file.path}", file=sys.stderr if args.json else out)
    return code


def run(args: argparse.Namespace) -> int:
    if args.report is not None:
        _refuse_with(args, "--report", {**RUN_OPTIONS, "resume": "--resume"}, "redraws a saved run")
        return _report(_open_file(args.report, "--report"), args, sys.stdout)
    plan = _resumed_plan(args) if args.resume is not None else _new_plan(args)
    if len(plan.cards) == 1:
        output.warn(ONE_MODEL)
    return asyncio.run(_run(plan, args))
