"""The lab's pictures: per task, each score against parameter count on a log axis, one series per
score (exact, probability of the right answer) and variant. A character grid for the terminal and
the app's chart widget, and a self-contained SVG for a browser, a README or a slide.

Everything here is a pure function of a results file's header and cells, so a saved run redraws
the same. Model names and task titles come from user files: made harmless for a terminal
(`safe_text`) and escaped in SVG.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tui.lab.stats import MIN_ITEMS, Cell
from tui.textsafe import safe_text

SCORES = ("exact", "probability")
# One marker pair per variant: (exact, probability); filled for exact, hollow for probability.
MARKERS = (("●", "○"), ("■", "□"), ("▲", "△"), ("◆", "◇"))
DOTTED = "·"  # the line joining a probability series' points; exact ones are solid (─ ╱ ╲)
GUTTER = 5  # the y axis labels and the axis itself: "100%┤"

Grid = list[list[tuple[str, int | None]]]  # rows of (character, index of the series it draws or None)


@dataclass(frozen=True)
class ChartSeries:
    label: str  # "exact", "probability", or with the variant: "exact · step by step"
    points: list[tuple[int | None, float | None]]  # per model, in the lineup's order: (params, value 0..1 or None)
    marker: str
    score: str = "exact"  # one of SCORES
    variant: str | None = None
    intervals: list[tuple[float, float] | None] = field(default_factory=list)  # exact: per point, its 95% bounds


# --- the run: its models and tasks -----------------------------------------------------------


def one_line(text: Any) -> str:
    """Text from a user file as one harmless line."""
    return " ".join(safe_text(str(text)).split())


def model_params(model: dict[str, Any]) -> int | None:
    """A header card's parameter count; None unless it is a positive whole number (a remote model)."""
    value = model.get("params")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def short_name(model: dict[str, Any]) -> str:
    """The card's name without the word most chat models share: "SmolLM2 135M Instruct" -> "SmolLM2 135M"."""
    name = one_line(model.get("name") or model.get("id") or "?")
    return re.sub(r"[\s_-]+(instruct|chat|it)$", "", name, flags=re.IGNORECASE) or name


def positions(models: list[dict[str, Any]]) -> list[float]:
    """Each model's place on the x axis, 0..1: log10(params) spread over the axis; models of unknown
    size after the known ones, evenly spaced."""
    logs = [math.log10(params) if (params := model_params(model)) else None for model in models]
    known = [value for value in logs if value is not None]
    unknown = len(models) - len(known)
    step = 1 / (unknown + 3) if known else 0.0
    span = 1 - unknown * step  # the known models' share of the axis
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    places: list[float] = []
    unknown_seen = 0
    for value in logs:
        if value is not None:
            places.append(span * ((value - low) / (high - low) if high - low > 1e-9 else 0.5))
        elif known:
            unknown_seen += 1
            places.append(span + unknown_seen * step)  # the last one at the axis' end
        else:
            places.append(0.5 if unknown == 1 else unknown_seen / (unknown - 1))
            unknown_seen += 1
    return places


def task_ids(header: dict[str, Any], cells: Sequence[Cell]) -> list[str]:
    """The header's tasks, then any only the cells name (a damaged header)."""
    listed = header.get("tasks")
    named = [str(task) for task in listed] if isinstance(listed, list) else []
    return list(dict.fromkeys([*named, *(cell.task for cell in cells)]))


def lineup(header: dict[str, Any], cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The header's model cards, then a bare one for any model only the cells name."""
    listed = header.get("models")
    models = [model for model in listed if isinstance(model, dict)] if isinstance(listed, list) else []
    known = {str(model.get("id")) for model in models}
    return models + [{"id": model} for model in dict.fromkeys(cell.model for cell in cells) if model not in known]


def task_title(header: dict[str, Any], task: str) -> str:
    """ "Title (id)" where the header records the task's title, else the id."""
    titles = header.get("titles")
    title = titles.get(task) if isinstance(titles, dict) else None
    return f"{one_line(title)} ({one_line(task)})" if title and title != task else one_line(task)


def created_label(header: dict[str, Any]) -> str:
    """When the run started, to the minute: "2025-01-02 03:04"; "" if the header does not say."""
    return one_line(header.get("created") or "")[:16].replace("T", " ")


# --- series ----------------------------------------------------------------------------------


def _value(cell: Cell | None, score: str) -> float | None:
    if cell is None:
        return None
    if score == "exact":
        return cell.accuracy if cell.n else None
    return cell.probability


def series_for(cells: Sequence[Cell], task: str, models: list[dict[str, Any]]) -> list[ChartSeries]:
    """One series per score and variant of the task, with a point per model; a series with no value
    at all (probability unavailable everywhere) is left out."""
    task_cells = [cell for cell in cells if cell.task == task]
    series = []
    for number, variant in enumerate(dict.fromkeys(cell.variant for cell in task_cells)):
        by_model = {cell.model: cell for cell in task_cells if cell.variant == variant}
        for score, marker in zip(SCORES, MARKERS[number % len(MARKERS)], strict=True):
            values = [_value(by_model.get(str(model.get("id"))), score) for model in models]
            if all(value is None for value in values):
                continue
            label = score if variant is None else f"{score} · {one_line(variant)}"
            points = [(model_params(model), value) for model, value in zip(models, values, strict=True)]
            bounds = [
                (cell.exact_low, cell.exact_high) if score == "exact" and cell and cell.n else None
                for cell in (by_model.get(str(model.get("id"))) for model in models)
            ]
            series.append(ChartSeries(label, points, marker, score, variant, bounds))
    return series


# --- the text chart --------------------------------------------------------------------------


def _row(value: float, height: int) -> int:
    """The grid row of a value 0..1: 100% at the top row, 0% at the bottom one."""
    return round((1 - min(max(value, 0.0), 1.0)) * (height - 1))


def _fit(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: width - 1] + "…" if width > 0 else ""


def _place_names(names: list[str], columns: list[int], total: int, row_count: int) -> tuple[list[str], bool]:
    """The names centred under their columns, alternating between `row_count` rows, each cut short
    ("…") where it would reach a neighbour on its row; and whether every name fitted whole."""
    order = sorted(range(len(names)), key=lambda index: (columns[index], index))
    rows = [[" "] * total for _ in range(row_count)]
    fitted = True
    for row, members in enumerate(order[start::row_count] for start in range(row_count)):
        for place, index in enumerate(members):
            column = columns[index]
            left = 0 if place == 0 else (columns[members[place - 1]] + column) // 2 + 1
            last = place == len(members) - 1
            right = total - 1 if last else (column + columns[members[place + 1]]) // 2 - 1
            text = _fit(names[index], right - left + 1)
            fitted = fitted and text == names[index]
            start = min(max(column - len(text) // 2, left), right - len(text) + 1)
            rows[row][start : start + len(text)] = list(text)
    return ["".join(row) for row in rows], fitted


def _name_rows(names: list[str], columns: list[int], total: int) -> list[str]:
    """The model names on one row if they all fit whole, else on two."""
    rows, fitted = _place_names(names, columns, total, 1)
    return rows if fitted else _place_names(names, columns, total, 2)[0]


def plot(series: list[ChartSeries], models: list[dict[str, Any]], width: int = 60, height: int = 12) -> Grid:
    """The chart as a character grid: a plot area `width` × `height` (y 0–100%, x log parameters)
    with its axes, then one or two rows of model names. Lines first, then markers over them; where
    two markers meet, the earlier series' stays. Models of unknown size are marked "?" on the axis."""
    columns = [GUTTER + round(place * (width - 1)) for place in positions(models)]
    total = GUTTER + width
    grid: Grid = [[(" ", None)] * total for _ in range(height)]
    y_labels = {0: "100%", _row(0.5, height): " 50%", height - 1: "  0%"}
    for row in range(height):
        axis = y_labels[row] + "┤" if row in y_labels else "    │"
        grid[row][:GUTTER] = [(char, None) for char in axis]

    for index, line in enumerate(series):
        drawn = sorted(
            (columns[number], value)
            for number, (params, value) in enumerate(line.points)
            if params is not None and value is not None
        )
        for (start, begin), (end, finish) in pairwise(drawn):
            for column in range(start, end):
                here = _row(begin + (finish - begin) * (column - start) / (end - start), height)
                there = _row(begin + (finish - begin) * (column + 1 - start) / (end - start), height)
                stroke = DOTTED if line.score != "exact" else "─" if here == there else "╱" if there < here else "╲"
                # Down (or up) the column to where the next one starts, so a steep rise stays joined.
                for row in range(here, there, 1 if there > here else -1) if there != here else [here]:
                    if grid[row][column][0] == " ":
                        grid[row][column] = (stroke, index)
    markers = {line.marker for line in series}
    for index, line in enumerate(series):
        for number, (_, value) in enumerate(line.points):
            if value is not None and grid[row := _row(value, height)][columns[number]][0] not in markers:
                grid[row][columns[number]] = (line.marker, index)

    axis_row = [(" " * (GUTTER - 1) + "└" + "─" * width)[column] for column in range(total)]
    for model, column in zip(models, columns, strict=True):
        axis_row[column] = "┴" if model_params(model) is not None else "?"
    grid.append([(char, None) for char in axis_row])
    names = _name_rows([short_name(model) for model in models], columns, total) if models else []
    grid += [[(char, None) for char in row] for row in names]
    return grid


def legend(series: list[ChartSeries]) -> str:
    return "  ".join(f"{line.marker} {line.label}" for line in series) or "no scores to show"


def text_chart(series: list[ChartSeries], models: list[dict[str, Any]], width: int = 60, height: int = 12) -> str:
    """The chart as plain text, its legend on the last line."""
    rows = ["".join(char for char, _ in row).rstrip() for row in plot(series, models, width, height)]
    return "\n".join([*rows, " " * GUTTER + legend(series)])


# --- notes shared by the reports -------------------------------------------------------------


def task_notes(cells: Sequence[Cell], task: str, models: list[dict[str, Any]]) -> list[str]:
    """What a reader must know before trusting a task's numbers: failed models, cells with too few
    items, probability not available, a single model."""
    task_cells = [cell for cell in cells if cell.task == task]
    names = {str(model.get("id")): short_name(model) for model in models}

    def who(cells_: list[Cell]) -> str:
        return ", ".join(dict.fromkeys(names.get(cell.model, one_line(cell.model)) for cell in cells_))

    notes = [
        f"{names.get(model, one_line(model))} failed: {one_line(message)}"
        for model, message in dict.fromkeys((cell.model, cell.failed) for cell in task_cells if cell.failed)
    ]
    if too_few := [cell for cell in task_cells if cell.too_few and cell.n and not cell.failed]:
        notes.append(f"too few items (under {MIN_ITEMS}) to tell a jump from noise: {who(too_few)}")
    if unavailable := [cell for cell in task_cells if cell.probability is None and cell.n and not cell.failed]:
        notes.append(f"probability unavailable: {who(unavailable)}")
    if len(models) == 1:
        notes.append("only one model: a curve needs two points")
    return notes


# --- SVG -------------------------------------------------------------------------------------

_XML_UNSAFE = re.compile(r"[\ud800-\udfff\ufffe\uffff]")  # not allowed in XML, nor encodable as UTF-8
COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#1b7c83")  # one per variant
WIDTH = 880
PLOT_LEFT, PLOT_RIGHT, PLOT_PAD = 70, 580, 24  # the plot area's x extent, and its inner margin
PLOT_TOP, PLOT_HEIGHT = 50, 220  # within a panel
NOTES_TOP = 360  # within a panel: below the slanted model names
NOTE_HEIGHT = 16


def _x(text: Any) -> str:
    """Text from a user file, escaped for SVG (XML) on one line."""
    return html.escape(_XML_UNSAFE.sub("\ufffd", one_line(text)))


def _decade(power: int) -> str:
    for floor, unit in ((12, "T"), (9, "B"), (6, "M"), (3, "K")):
        if power >= floor:
            return f"{10 ** (power - floor)}{unit}"
    return str(10**power)


def _panel_height(notes: list[str]) -> int:
    return NOTES_TOP + NOTE_HEIGHT * len(notes) + 20


def _panel(top: int, title: str, notes: list[str], series: list[ChartSeries], models: list[dict[str, Any]]) -> str:
    plot_top, plot_bottom = top + PLOT_TOP, top + PLOT_TOP + PLOT_HEIGHT
    inner = PLOT_RIGHT - PLOT_LEFT - 2 * PLOT_PAD
    xs = [PLOT_LEFT + PLOT_PAD + place * inner for place in positions(models)]

    def y(value: float) -> float:
        return plot_bottom - min(max(value, 0.0), 1.0) * PLOT_HEIGHT

    out = [f'<text x="20" y="{top + 24}" font-size="16" font-weight="bold" fill="#1f2328">{_x(title)}</text>']
    for percent in (0, 25, 50, 75, 100):
        level = y(percent / 100)
        out.append(
            f'<line x1="{PLOT_LEFT}" y1="{level:.1f}" x2="{PLOT_RIGHT}" y2="{level:.1f}" '
            f'stroke="{"#59636e" if percent == 0 else "#d1d9e0"}" stroke-width="1"/>'
            f'<text x="{PLOT_LEFT - 8}" y="{level + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#59636e">{percent}%</text>'
        )
    # Faint lines at each power of ten the known sizes span, so the axis reads as a log scale.
    known = sorted(
        (math.log10(params), x) for model, x in zip(models, xs, strict=True) if (params := model_params(model))
    )
    if len(known) > 1 and known[-1][0] - known[0][0] > 1e-9:
        (low, left), (high, right) = known[0], known[-1]
        for power in range(math.ceil(low), math.floor(high) + 1):
            x = left + (power - low) / (high - low) * (right - left)
            out.append(
                f'<line x1="{x:.1f}" y1="{plot_top}" x2="{x:.1f}" y2="{plot_bottom}" stroke="#d1d9e0" '
                f'stroke-dasharray="2 3"/><text x="{x:.1f}" y="{plot_top - 4}" font-size="10" '
                f'text-anchor="middle" fill="#59636e">{_decade(power)}</text>'
            )
    out.append(f'<line x1="{PLOT_LEFT}" y1="{plot_top}" x2="{PLOT_LEFT}" y2="{plot_bottom}" stroke="#59636e"/>')
    for model, x in zip(models, xs, strict=True):
        name = short_name(model) + ("" if model_params(model) else " (size ?)")
        out.append(
            f'<line x1="{x:.1f}" y1="{plot_bottom}" x2="{x:.1f}" y2="{plot_bottom + 5}" stroke="#59636e"/>'
            f'<text x="{x:.1f}" y="{plot_bottom + 16}" font-size="11" fill="#1f2328" '
            f'transform="rotate(30 {x:.1f} {plot_bottom + 16})">{_x(_fit(name, 32))}</text>'
        )

    variants = list(dict.fromkeys(line.variant for line in series))
    # Hollow (probability) markers first, a size larger, so an exact point on the same spot shows inside.
    for number, line in sorted(enumerate(series), key=lambda numbered: numbered[1].score == "exact"):
        colour = COLOURS[variants.index(line.variant) % len(COLOURS)]
        exact = line.score == "exact"
        dash = "" if exact else ' stroke-dasharray="6 4"'
        fill, radius, ring = (colour, 4, 0) if exact else ("#ffffff", 7, 2)  # a dot inside a ring where both meet
        joined = sorted(
            (xs[index], y(value))
            for index, (params, value) in enumerate(line.points)
            if params is not None and value is not None
        )
        if len(joined) > 1:
            coordinates = " ".join(f"{x:.1f},{level:.1f}" for x, level in joined)
            out.append(f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        # The 95% interval of each exact score: where two bars overlap, the gap may be noise.
        for index, bounds in enumerate(line.intervals):
            if bounds is not None:
                out.append(
                    f'<line x1="{xs[index]:.1f}" y1="{y(bounds[0]):.1f}" x2="{xs[index]:.1f}" y2="{y(bounds[1]):.1f}" '
                    f'stroke="{colour}" stroke-width="6" stroke-opacity="0.2" stroke-linecap="round"/>'
                )
        out += [
            f'<circle cx="{xs[index]:.1f}" cy="{y(value):.1f}" r="{radius}" fill="{fill}" stroke="{colour}" '
            f'stroke-width="{ring}"/>'
            for index, (_, value) in enumerate(line.points)
            if value is not None
        ]
        key = plot_top + 8 + 20 * number
        out.append(
            f'<line x1="{PLOT_RIGHT + 30}" y1="{key}" x2="{PLOT_RIGHT + 60}" y2="{key}" stroke="{colour}" '
            f'stroke-width="2"{dash}/><circle cx="{PLOT_RIGHT + 45}" cy="{key}" r="{radius}" fill="{fill}" '
            f'stroke="{colour}" stroke-width="{ring}"/><text x="{PLOT_RIGHT + 68}" y="{key + 4}" font-size="12" '
            f'fill="#1f2328">{_x(_fit(line.label, 34))}</text>'
        )
    if not series:
        out.append(f'<text x="{PLOT_RIGHT + 30}" y="{plot_top + 12}" font-size="12" fill="#59636e">no scores</text>')
    out += [
        f'<text x="20" y="{top + NOTES_TOP + NOTE_HEIGHT * number}" font-size="12" fill="#9a6700">'
        f"{_x(_fit(note, 140))}</text>"
        for number, note in enumerate(notes)
    ]
    return "\n".join(out)


def svg_report(header: dict[str, Any], cells: Sequence[Cell]) -> str:
    """Every task's chart in one self-contained SVG: inline presentation attributes only, no
    scripts, no fonts or links to fetch; opens in any browser."""
    models = lineup(header, cells)
    tasks = task_ids(header, cells)
    panels = [(task, task_notes(cells, task, models)) for task in tasks]
    height = 70 + sum(_panel_height(notes) for _, notes in panels) + (0 if tasks else 60)
    created = created_label(header)
    title = "Ladder emergence lab" + (f" · {created}" if created else "")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
        f"<title>{_x(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="20" y="32" font-size="20" font-weight="bold" fill="#1f2328">{_x(title)}</text>',
        '<text x="20" y="52" font-size="12" fill="#59636e">Share of items right against parameters (log scale): '
        "exact match (filled, solid; shaded: 95% interval) and mean probability of the right answer "
        "(hollow, dashed)</text>",
    ]
    top = 70
    for task, notes in panels:
        out.append(_panel(top, task_title(header, task), notes, series_for(cells, task, models), models))
        top += _panel_height(notes)
    if not tasks:
        out.append('<text x="20" y="100" font-size="14" fill="#59636e">No tasks in this run.</text>')
    return "\n".join([*out, "</svg>"]) + "\n"
