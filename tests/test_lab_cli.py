"""`ladder lab` end to end: a real run on SmolLM2-135M (chat) and Gemma 3 270M (a base model, asked
few-shot), killed and resumed, stopped with Ctrl+C, redrawn from its file; a model whose worker
dies mid-run; and bad input, refused in one line before any model loads."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually, wait_for

from tui.cards import load_catalog
from tui.commands.lab import ProgressLine
from tui.engine.local import Engine
from tui.lab.report import report_text
from tui.lab.results import LabFile, lab_header
from tui.lab.runner import LabProgress, LabRunner
from tui.lab.stats import cells
from tui.lab.tasks import form_for, lab_tasks
from tui.scenario import load_scenarios

SMOL, GEMMA = "smollm2-135m-instruct", "gemma-3-270m"
TASKS = ("unscramble", "emoji-movie-choices")
RUN = ("lab", *TASKS, "--model", SMOL, "--model", GEMMA, "--items", "3")
ROWS = 2 * 2 * 3


def ladder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        env=env or os.environ,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def running(path: Path, rows: int) -> Iterator[subprocess.Popen[str]]:
    """`ladder lab` of RUN writing into `path`, once it has written `rows` rows; killed after the block."""
    command = [sys.executable, "-m", "tui.cli", *RUN, "--out", str(path)]
    pipe = subprocess.PIPE
    process = subprocess.Popen(command, stdout=pipe, stderr=pipe, stdin=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: len(rows_in(path)) >= rows or process.poll() is not None, timeout=300, what=f"{rows} row(s)")
        assert process.poll() is None, "the run ended before it could be stopped"
        yield process
    finally:
        process.kill()
        process.communicate(timeout=30)


def rows_in(path: Path) -> list[dict[str, Any]]:
    """The whole rows of a results file, read as another process writes it."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[1:-1]  # the header, and a last line still being written, left out
    return [record for record in map(json.loads, lines) if record["type"] == "row"]


def keys(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(row["task"], row["item"], row["variant"], row["model"]) for row in rows}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[tuple[Path, str, str]]:
    """One whole run (module-scoped: its models load once for the tests that read it): its file,
    stdout and stderr."""
    folder = tmp_path_factory.mktemp("lab")
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(shared_cache),
        "XDG_CONFIG_HOME": str(folder / "config"),
        "XDG_DATA_HOME": str(folder / "data"),
    }
    path = folder / "run.jsonl"
    result = ladder(*RUN, "--out", str(path), env=env)
    assert result.returncode == 0, result.stderr
    yield path, result.stdout, result.stderr


@pytest.mark.model
def test_a_run_writes_every_row_and_prints_each_tasks_table_and_chart(finished_run: tuple[Path, str, str]) -> None:
    path, stdout, stderr = finished_run
    rows = rows_in(path)
    assert len(rows) == ROWS and len(keys(rows)) == ROWS
    assert all(isinstance(row["exact"], bool) and isinstance(row["probability"], float) for row in rows)
    assert {row["model"]: row["form"] for row in rows} == {SMOL: "chat", GEMMA: "few-shot"}
    choices = [row for row in rows if row["task"] == "emoji-movie-choices"]
    assert all(isinstance(row["probability_pick"], bool) for row in choices)
    assert all(isinstance(row["partial"], float) for row in rows if row["task"] == "unscramble")
    header = json.loads(path.read_text().split("\n")[0])
    assert [model["id"] for model in header["models"]] == [SMOL, GEMMA]
    assert all(len(model["sha256"]) == 64 for model in header["models"])
    # Each task's title, table (both models) and chart (its legend), in the order asked.
    scenarios, _ = load_scenarios()
    titles = [scenarios[task].title for task in TASKS]
    assert stdout.index(titles[0]) < stdout.index(titles[1])
    assert stdout.count("SmolLM2 135M") >= 2 and stdout.count("Gemma 3 270M") >= 2
    assert stdout.count("Exact (95% CI)") == 2 and stdout.count("exact") >= 2
    assert f"results: {path}" in stdout
    assert "lab: 12/12 items" in stderr and "Traceback" not in stderr


@pytest.mark.model
def test_report_redraws_a_saved_run_without_loading_a_model(
    finished_run: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, stdout, _ = finished_run
    svg, markdown = tmp_path / "lab.svg", tmp_path / "lab.md"
    result = ladder("lab", "--report", str(path), "--svg", str(svg), "--markdown", str(markdown))
    assert result.returncode == 0, result.stderr
    assert result.stdout == stdout  # the same report as the run printed
    assert "loading" not in result.stderr
    assert svg.read_text().startswith("<svg") and "Gemma 3 270M" in svg.read_text()
    assert markdown.read_text().count("| SmolLM2 135M") == 2
    as_json = ladder("lab", "--report", str(path), "--json")
    assert json.loads(as_json.stdout)["type"] == "lab-report"


@pytest.mark.model
def test_a_killed_run_resumes_and_ends_with_every_row_once(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with running(path, rows=3) as process:
        process.kill()
    first = rows_in(path)
    assert 3 <= len(first) < ROWS

    result = ladder("lab", "--resume", str(path))

    assert result.returncode == 0, result.stderr
    rows = rows_in(path)
    assert len(rows) == ROWS and len(keys(rows)) == ROWS
    assert rows[: len(first)] == first


@pytest.mark.model
def test_ctrl_c_stops_the_run_saying_how_to_resume_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with running(path, rows=1) as process:
        seen = rows_in(path)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    rows = rows_in(path)
    assert rows[: len(seen)] == seen and len(rows) < ROWS
    assert stderr.splitlines()[-1] == (
        f"ladder: stopped: {len(rows)} rows saved in {path}; resume with `ladder lab --resume {path}`"
    )
    assert "Traceback" not in stderr


@pytest.mark.model
def test_one_model_says_a_curve_needs_two_points_and_still_runs(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    result = ladder("lab", "unscramble", "--model", SMOL, "--items", "2", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert "a curve needs two points: add a model (--model) to see a trend" in result.stderr
    assert len(rows_in(path)) == 2


@pytest.mark.model
async def test_a_model_whose_worker_dies_is_marked_failed_and_the_other_finishes(tmp_path: Path) -> None:
    scenarios, _ = load_scenarios()
    tasks = lab_tasks(list(TASKS), scenarios, 3, seed=0)
    catalog = load_catalog()
    cards = [catalog.cards[SMOL], catalog.cards[GEMMA]]
    forms = {card.id: form_for(card, None) for card in cards}
    header = lab_header(tasks, cards, forms, 3, 0, {"schedule": "auto", "cores": 2})
    file = LabFile.create(tmp_path / "run.jsonl", header)
    engine = Engine()
    models = [engine.model(card) for card in cards]
    victim = models[1]
    killed: list[int] = []

    def kill_after_its_first_row(progress: LabProgress) -> None:
        if progress.last and progress.last["model"] == GEMMA and not killed:
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(victim.pid)

    try:
        await LabRunner(tasks, models, file, forms).run(kill_after_its_first_row)
    finally:
        await engine.close()

    assert killed
    file = LabFile.open(file.path)
    assert list(file.failures) == [GEMMA] and "killed" in file.failures[GEMMA]
    assert len([row for row in file.rows if row["model"] == SMOL]) == 6
    assert 1 <= len([row for row in file.rows if row["model"] == GEMMA]) < 6
    report = report_text(file.header, cells(file.rows, file.failures, [SMOL, GEMMA]))
    gemma_lines = [line for line in report.splitlines() if line.startswith("Gemma 3 270M")]
    assert len(gemma_lines) == 2 and all("failed" in line for line in gemma_lines)
    await eventually(lambda: victim.state == "closed", what="the engine to close the failed model")


# --- bad input: one line, exit 2, no model loaded --------------------------------------------


def refused(*args: str) -> str:
    result = ladder("lab", *args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("ladder: ") and result.stdout == ""
    return line


def test_an_unknown_task_is_refused_naming_the_known_ones() -> None:
    line = refused("emoji-movi", "--model", SMOL)
    assert "unknown task 'emoji-movi'" in line and "emoji-movie" in line


def test_a_task_without_answers_to_score_is_refused() -> None:
    assert "linux-terminal" in refused("linux-terminal", "--model", SMOL)


def test_zero_items_are_refused() -> None:
    assert "--items must be at least 1" in refused("--items", "0", "--model", SMOL)


def test_resuming_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert "no such file" in refused("--resume", str(tmp_path / "gone.jsonl"))


def test_resuming_a_file_that_is_not_a_lab_file_is_refused(tmp_path: Path) -> None:
    transcript = tmp_path / "session.jsonl"
    transcript.write_text('{"type": "session"}\n')
    assert "not a lab results file" in refused("--resume", str(transcript))


def test_resuming_with_run_options_is_refused(tmp_path: Path) -> None:
    line = refused("--resume", str(tmp_path / "run.jsonl"), "--items", "5", "--model", SMOL)
    assert "--resume takes the tasks, items, seed, forms and models from its file" in line
    assert "--items" in line and "--model" in line


def test_a_report_of_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert "no such file" in refused("--report", str(tmp_path / "gone.jsonl"))


def test_resuming_a_run_whose_model_file_has_changed_is_refused(tmp_path: Path) -> None:
    scenarios, _ = load_scenarios()
    tasks = lab_tasks(["unscramble"], scenarios, 3, seed=0)
    card = replace(load_catalog().cards[SMOL], sha256="0" * 64)  # the file the run used had another hash
    path = tmp_path / "run.jsonl"
    LabFile.create(path, lab_header(tasks, [card], {SMOL: "chat"}, 3, 0, {"schedule": "auto", "cores": 2}))
    line = refused("--resume", str(path))
    assert f"model '{SMOL}' has changed since the run" in line and "start a new run" in line


def test_progress_off_a_terminal_is_a_line_per_tenth_of_the_run() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    for done in range(41):
        line(LabProgress(done, 40, done * 2.0, 150.0 - done if done else None, {}, None))
    lines = out.getvalue().splitlines()
    assert lines[0] == "lab: 0/40 items" and lines[1] == "lab: 4/40 items, 2:26 left"
    assert len(lines) == 11 and lines[-1] == "lab: 40/40 items"
