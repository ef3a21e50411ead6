"""The lab's report: per task, a table of every model's scores with the uncertainty of each, then
the chart. As plain text for the terminal (`ladder lab`, `--report`), Markdown for a README or a
slide, or JSON for other tools. Pure functions of a results file's header and cells.

Percentages are whole numbers: with 20 items one item is worth 5%, so decimals would claim a
precision the run does not have; the 95% interval says how much it has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from tui.export import markdown_inline
from tui.lab.chart import (
    created_label,
    lineup,
    one_line,
    series_for,
    short_name,
    task_ids,
    task_notes,
    task_title,
    text_chart,
)
from tui.lab.stats import Cell
from tui.labels import saved_params_label

NONE = "—"
# A task's table, here and on the Lab screen; the Variant column only where the task has variants.
COLUMNS = ("Model", "Variant", "Size", "Form", "n", "Exact (95% CI)", "P(right)", "Pick (MC)", "Partial", "Notes")


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.0f}%"


def _exact(cell: Cell | None) -> str:
    if cell is None or not cell.n:
        return NONE
    return f"{cell.accuracy * 100:.0f}% ({cell.exact_low * 100:.0f}–{cell.exact_high * 100:.0f})"


def _notes(cell: Cell | None, failure_message: bool) -> str:
    if cell is None:
        return "no items scored"
    notes = [f"failed: {one_line(cell.failed)}" if failure_message else "failed"] if cell.failed else []
    notes += ["too few items"] if cell.too_few and cell.n else []
    notes += ["no probability"] if cell.probability is None and cell.n and not cell.failed else []
    return "; ".join(notes)


def table_row(
    model: dict[str, Any], form: Any, variant: str | None, cell: Cell | None, failure_message: bool = False
) -> dict[str, str]:
    """A model's row of a task's table, by column (COLUMNS); `cell` None: no items scored. Notes are a few
    words, a failure's message only with `failure_message` (where no notes follow the table: the screen)."""
    probability, pick, partial = (cell.probability, cell.probability_pick, cell.partial) if cell else (None, None, None)
    return {
        "Model": short_name(model),
        "Variant": one_line(variant or ""),
        "Size": saved_params_label(model.get("params")),
        "Form": one_line(form or NONE),
        "n": NONE if cell is None else str(cell.n),
        "Exact (95% CI)": _exact(cell),
        "P(right)": _percent(probability),
        "Pick (MC)": _percent(pick),
        "Partial": _percent(partial),
        "Notes": _notes(cell, failure_message),
    }


def task_table(
    cells: Sequence[Cell], task: str, models: list[dict[str, Any]], forms: dict[str, Any]
) -> list[list[str]]:
    """The table: headings, then variant by variant a row per model of the lineup (a model with no
    cell says so). A Variant column where the task has variants; Notes last."""
    task_cells = [cell for cell in cells if cell.task == task]
    variants = list(dict.fromkeys(cell.variant for cell in task_cells)) or [None]
    columns = [column for column in COLUMNS if column != "Variant" or variants != [None]]
    table = [columns]
    for variant in variants:
        by_model = {cell.model: cell for cell in task_cells if cell.variant == variant}
        for model in models:
            model_id = str(model.get("id"))
            row = table_row(model, forms.get(model_id), variant, by_model.get(model_id))
            table.append([row[column] for column in columns])
    return table


def _forms(header: dict[str, Any]) -> dict[str, Any]:
    forms = header.get("forms")
    return forms if isinstance(forms, dict) else {}


def _aligned(table: list[list[str]]) -> list[str]:
    """Plain-text columns, the headings underlined."""
    widths = [max(len(text) for text in column) for column in zip(*table, strict=True)]
    lines = [table[0], ["-" * width for width in widths], *table[1:]]
    return ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() for line in lines]


def task_report(
    task_id: str,
    title: str,
    cells: Sequence[Cell],
    models: list[dict[str, Any]],
    forms: dict[str, Any] | None = None,
    width: int = 60,
    height: int = 12,
) -> str:
    """One task as plain text: its title, the table (variant columns where the task has variants),
    the chart, then the notes a reader needs (failures, too few items, a single model)."""
    table = _aligned(task_table(cells, task_id, models, forms or {}))
    chart = text_chart(series_for(cells, task_id, models), models, width, height)
    notes = [f"note: {note}" for note in task_notes(cells, task_id, models)]
    return "\n".join([one_line(title), "", *table, "", chart, *([""] if notes else []), *notes])


def _run_line(header: dict[str, Any], tasks: list[str], models: list[dict[str, Any]]) -> str:
    created = created_label(header)
    facts = [
        f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}",
        f"{len(models)} model{'s' if len(models) != 1 else ''}",
    ]
    facts += [f"{one_line(header['items'])} items"] if header.get("items") is not None else []
    facts += [f"seed {one_line(header['seed'])}"] if header.get("seed") is not None else []
    facts += [f"Ladder {one_line(header['version'])}"] if header.get("version") else []
    return "Ladder emergence lab" + (f" · {created}" if created else "") + " · " + " · ".join(facts)


def report_text(header: dict[str, Any], cells: Sequence[Cell]) -> str:
    """The whole run as plain text: a line about the run, then every task's report (no final newline:
    it is printed)."""
    models, tasks = lineup(header, cells), task_ids(header, cells)
    reports = [task_report(task, task_title(header, task), cells, models, _forms(header)) for task in tasks]
    return "\n\n\n".join([_run_line(header, tasks, models), *reports])


def markdown_summary(header: dict[str, Any], cells: Sequence[Cell]) -> str:
    """A table per task for a README or a slide; every text from the file escaped for Markdown."""
    models, tasks = lineup(header, cells), task_ids(header, cells)
    out = [f"# {markdown_inline(_run_line(header, tasks, models))}"]
    for task in tasks:
        headings, *rows = [row[:-1] for row in task_table(cells, task, models, _forms(header))]  # notes go below
        out += ["", f"## {markdown_inline(task_title(header, task))}", ""]
        out += ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
        out += ["| " + " | ".join(markdown_inline(text) for text in row) + " |" for row in rows]
        out += [line for note in task_notes(cells, task, models) for line in ("", f"*Note: {markdown_inline(note)}*")]
    return "\n".join(out) + "\n"


def report_json(header: dict[str, Any], cells: Sequence[Cell]) -> str:
    """The run as one JSON document: the header, then per task its cells (with accuracy and the
    too-few flag) and notes."""
    models, tasks = lineup(header, cells), task_ids(header, cells)
    document = {
        "type": "lab-report",
        "format": 1,
        "header": header,
        "tasks": [
            {
                "task": task,
                "title": task_title(header, task),
                "cells": [
                    {**asdict(cell), "accuracy": cell.accuracy, "too_few": cell.too_few}
                    for cell in cells
                    if cell.task == task
                ],
                "notes": task_notes(cells, task, models),
            }
            for task in tasks
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)
