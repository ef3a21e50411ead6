"""The lab's report and charts, from known cells: the text chart (a snapshot, and markers where
the log axis puts them), one model, models of unknown size, the SVG (well-formed, escaped,
self-contained) and the Markdown table. No models needed: cells are built as stats builds them."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from typing import Any

from markdown_it import MarkdownIt

from tui.lab.chart import GUTTER, plot, series_for, svg_report, text_chart
from tui.lab.report import markdown_summary, report_json, report_text, task_report
from tui.lab.stats import Cell, wilson

MODELS: list[dict[str, Any]] = [
    {"id": "small", "name": "Small 100M Instruct", "params": 100_000_000},
    {"id": "middle", "name": "Middle 300M", "params": 300_000_000},
    {"id": "large", "name": "Large 1B", "params": 1_000_000_000},
]
FORMS = {"small": "chat", "middle": "few-shot", "large": "chat"}


def cell(
    model: str,
    n: int,
    exact: int,
    probability: float | None,
    *,
    task: str = "arithmetic",
    variant: str | None = None,
    pick: float | None = None,
    partial: float | None = None,
    failed: str | None = None,
) -> Cell:
    low, high = wilson(exact, n)
    return Cell(task, variant, model, n, exact, low, high, probability, pick, partial, failed)


ARITHMETIC = [
    cell("small", 20, 0, 0.1, partial=0.25),
    cell("middle", 20, 5, 0.4, partial=0.5),
    cell("large", 20, 18, 0.8, partial=0.95),
]


def marker_columns(grid: list[list[tuple[str, int | None]]], marker: str) -> list[int]:
    return sorted(column for row in grid for column, (char, _) in enumerate(row) if char == marker)


# --- the text chart --------------------------------------------------------------------------


def test_text_chart_of_known_cells_is_exactly_the_snapshot() -> None:
    chart = text_chart(series_for(ARITHMETIC, "arithmetic", MODELS), MODELS, width=40, height=8)
    assert chart == (
        "100%┤\n"
        "    │                                    ───●\n"
        "    │                                ───╱···\n"
        "    │                         ··────╱\n"
        " 50%┤                 ··○···───╱\n"
        "    │        ·········──●──╱\n"
        "    │○·····──────────╱\n"
        "  0%┤●────╱\n"
        "    └┴──────────────────┴───────────────────┴\n"
        "Small 100M         Middle 300M       Large 1B\n"
        "     ● exact  ○ probability"
    )


def test_markers_sit_where_the_log_axis_puts_each_model() -> None:
    models = [
        {"id": "one", "name": "One", "params": 100_000_000},
        {"id": "two", "name": "Two", "params": 200_000_000},
        {"id": "ten", "name": "Ten", "params": 1_000_000_000},
    ]
    cells = [cell("one", 20, 10, None), cell("two", 20, 10, None), cell("ten", 20, 10, None)]
    grid = plot(series_for(cells, "arithmetic", models), models, width=60, height=12)
    one, two, ten = marker_columns(grid, "●")
    assert one == GUTTER and ten == GUTTER + 59  # the smallest and largest at the plot's two ends
    # 10x as large is log10(10) / log10(2) = 3.32 times as far right as 2x (to a column's rounding).
    assert abs((ten - one) / (two - one) - 1 / math.log10(2)) < 0.1
    # The three points share the 50% row; the line joining them is drawn between, never over, them.
    assert all(grid[_row_of(grid, "●")][column][0] == "─" for column in range(one + 1, ten) if column != two)


def _row_of(grid: list[list[tuple[str, int | None]]], marker: str) -> int:
    return next(number for number, row in enumerate(grid) if any(char == marker for char, _ in row))


def test_grid_cells_say_which_series_drew_them() -> None:
    series = series_for(ARITHMETIC, "arithmetic", MODELS)
    grid = plot(series, MODELS, width=40, height=8)
    drawn = {(char, index) for row in grid for char, index in row if index is not None}
    assert ("●", 0) in drawn and ("○", 1) in drawn and ("·", 1) in drawn and ("─", 0) in drawn
    assert all(index in (0, 1) for _, index in drawn)
    assert [one.label for one in series] == ["exact", "probability"]


def test_one_model_is_a_point_and_the_report_says_a_curve_needs_two_points() -> None:
    models = MODELS[:1]
    cells = [cell("small", 20, 10, 0.5)]
    chart = text_chart(series_for(cells, "arithmetic", models), models, width=40, height=8)
    lines = chart.split("\n")
    assert chart.count("●") == 2 and chart.count("○") == 1  # the point (probability under it) and the legend
    assert lines[4].index("●") == GUTTER + 20  # one model: the middle of the axis, on the 50% row
    assert "─" not in "".join(lines[:8]) and "·" not in chart  # no line to draw
    assert lines[9].strip() == "Small 100M"
    report = task_report("arithmetic", "Arithmetic", cells, models)
    assert report.endswith("note: only one model: a curve needs two points")


def test_models_of_unknown_size_go_last_marked_with_a_question_mark_and_unjoined() -> None:
    models = [{"id": "remote", "name": "Remote model", "params": None}, *MODELS[:2]]
    cells = [cell("remote", 20, 20, None), cell("small", 20, 0, None), cell("middle", 20, 0, None)]
    grid = plot(series_for(cells, "arithmetic", models), models, width=40, height=8)
    axis = "".join(char for char, _ in grid[8])
    assert axis.rstrip().endswith("?") and axis.count("┴") == 2  # the known two are ticks, the remote "?" last
    assert grid[0][len(axis.rstrip()) - 1][0] == "●"  # its 100% point, over the "?"
    top = "".join(char for char, _ in grid[0][GUTTER:])
    assert top.strip() == "●"  # no line reaches it: its place on a log axis is unknown
    assert "Remote model" in "".join(char for row in grid[9:] for char, _ in row)


def test_only_unknown_sizes_spread_evenly_without_lines() -> None:
    models = [{"id": "a", "name": "A", "params": None}, {"id": "b", "name": "B", "params": None}]
    grid = plot(series_for([cell("a", 20, 0, None), cell("b", 20, 20, None)], "arithmetic", models), models, 40, 8)
    assert marker_columns(grid, "●") == [GUTTER, GUTTER + 39]
    assert "".join(char for char, _ in grid[8]).count("?") == 2
    assert not any(char in "─╱╲·" for row in grid[:8] for char, _ in row)


def test_variants_get_their_own_markers_and_labels() -> None:
    cells = [
        cell("small", 20, 0, 0.1, task="cot", variant="plain"),
        cell("large", 20, 8, 0.5, task="cot", variant="plain"),
        cell("small", 20, 0, 0.1, task="cot", variant="step by step"),
        cell("large", 20, 16, 0.7, task="cot", variant="step by step"),
    ]
    series = series_for(cells, "cot", MODELS)
    assert [(one.label, one.marker) for one in series] == [
        ("exact · plain", "●"),
        ("probability · plain", "○"),
        ("exact · step by step", "■"),
        ("probability · step by step", "□"),
    ]
    assert series[2].points == [(100_000_000, 0.0), (300_000_000, None), (1_000_000_000, 0.8)]
    assert series[2].intervals == [wilson(0, 20), None, wilson(16, 20)] and series[3].intervals == [None] * 3


# --- SVG -------------------------------------------------------------------------------------

EVIL_NAME = '</text><script>&"\x1b\x07'  # would end the label, start a script, ring the terminal's bell


def test_svg_parses_as_xml_and_shows_a_malicious_model_name_as_text() -> None:
    models = [{"id": "evil", "name": EVIL_NAME, "params": None}, *MODELS]
    cells = [*ARITHMETIC, cell("evil", 20, 10, 0.5)]
    header = {"created": "2025-01-02T03:04:05", "tasks": ["arithmetic"], "models": models, "titles": {}}
    svg = svg_report(header, cells)
    root = ET.fromstring(svg)
    namespace = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{namespace}svg"
    tags = {element.tag.removeprefix(namespace) for element in root.iter()}
    assert tags <= {"svg", "title", "rect", "text", "line", "polyline", "circle"}  # no script, link, image, style
    assert "href" not in svg and "url(" not in svg and "@import" not in svg
    texts = [element.text or "" for element in root.iter(f"{namespace}text")]
    assert '</text><script>&"␛␇ (size ?)' in texts
    assert "\x1b" not in svg and "\x07" not in svg
    assert sum(1 for element in root.iter(f"{namespace}polyline")) == 2  # exact and probability over 3 models
    assert sum(1 for element in root.iter(f"{namespace}circle")) == 2 * 4 + 2  # a point per model and score, legend


def test_svg_of_a_task_per_panel_names_every_model_and_note() -> None:
    cells = [*ARITHMETIC, cell("small", 3, 1, None, task="ipa"), cell("large", 0, 0, None, task="ipa", failed="out")]
    header = {"tasks": ["arithmetic", "ipa"], "models": MODELS, "titles": {"arithmetic": "Arithmetic"}}
    texts = [element.text for element in ET.fromstring(svg_report(header, cells)).iter() if element.text]
    assert "Arithmetic (arithmetic)" in texts and "ipa" in texts
    assert all(texts.count(name) == 2 for name in ("Small 100M", "Middle 300M", "Large 1B"))  # on both axes
    assert "Large 1B failed: out" in texts
    assert "too few items (under 10) to tell a jump from noise: Small 100M" in texts


# --- tables ----------------------------------------------------------------------------------


def test_markdown_summary_of_known_cells_is_exactly_this_table() -> None:
    header = {"created": "2025-01-02T03:04:05", "tasks": ["arithmetic"], "items": 20, "seed": 0, "models": MODELS}
    header["forms"] = FORMS
    cells = [*ARITHMETIC[:2], cell("large", 4, 3, None, failed="the model stopped: out of memory")]
    assert markdown_summary(header, cells) == (
        "# Ladder emergence lab · 2025-01-02 03:04 · 1 task · 3 models · 20 items · seed 0\n"
        "\n"
        "## arithmetic\n"
        "\n"
        "| Model | Size | Form | n | Exact (95% CI) | P(right) | Pick (MC) | Partial |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| Small 100M | 100M | chat | 20 | 0% (0–16) | 10% | — | 25% |\n"
        "| Middle 300M | 300M | few-shot | 20 | 25% (11–47) | 40% | — | 50% |\n"
        "| Large 1B | 1.0B | chat | 4 | 75% (30–95) | — | — | — |\n"
        "\n"
        "*Note: Large 1B failed: the model stopped: out of memory*\n"
    )


def test_markdown_keeps_a_hostile_name_inside_its_table_cell() -> None:
    models = [{"id": "evil", "name": "a | b <script>x</script> **c**", "params": 5}]
    markdown = markdown_summary({"tasks": ["t"], "models": models}, [cell("evil", 20, 1, 0.2, task="t")])
    html = MarkdownIt().enable("table").render(markdown)
    assert "<script>" not in html and "<strong>" not in html
    assert html.count("<td>") == 8  # one row of eight cells: the pipe did not split the name's cell
    assert "only one model: a curve needs two points" in html


def test_text_report_has_the_table_with_variants_and_notes_then_the_chart() -> None:
    cells = [
        cell("small", 20, 2, 0.3, task="emoji-movie-choices", variant="plain", pick=0.4),
        cell("middle", 8, 4, None, task="emoji-movie-choices", variant="plain", pick=None),
        cell("large", 0, 0, None, task="emoji-movie-choices", variant="plain", failed="crashed\nat item 1"),
    ]
    header = {"tasks": ["emoji-movie-choices"], "models": MODELS, "forms": FORMS}
    lines = report_text(header, cells).split("\n")
    assert lines[:11] == [
        "Ladder emergence lab · 1 task · 3 models",
        "",
        "",
        "emoji-movie-choices",
        "",
        "Model        Variant  Size  Form      n   Exact (95% CI)  P(right)  Pick (MC)  Partial  Notes",
        "-----------  -------  ----  --------  --  --------------  --------  ---------  -------  " + "-" * 29,
        "Small 100M   plain    100M  chat      20  10% (3–30)      30%       40%        —",
        "Middle 300M  plain    300M  few-shot  8   50% (22–78)     —         —          —        "
        "too few items; no probability",
        "Large 1B     plain    1.0B  chat      0   —               —         —          —        failed",
        "",
    ]
    assert lines[11] == "100%┤" and lines[-5] == "     ● exact · plain  ○ probability · plain"
    assert lines[-4:] == [
        "",
        "note: Large 1B failed: crashed at item 1",  # the message on one line
        "note: too few items (under 10) to tell a jump from noise: Middle 300M",
        "note: probability unavailable: Middle 300M",
    ]


def test_report_json_holds_every_cell_with_its_accuracy() -> None:
    header = {"tasks": ["arithmetic"], "models": MODELS}
    document = json.loads(report_json(header, ARITHMETIC))
    assert document["header"] == header
    [task] = document["tasks"]
    assert [one["model"] for one in task["cells"]] == ["small", "middle", "large"]
    assert [one["accuracy"] for one in task["cells"]] == [0.0, 0.25, 0.9]
    assert task["cells"][1]["exact_low"] == wilson(5, 20)[0] and task["notes"] == []
