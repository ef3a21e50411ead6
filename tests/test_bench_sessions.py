"""The sessions benchmark runs and reports every figure (its timings are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent / "bench" / "bench_sessions.py"
FIGURES = {
    "read_all_bytes",
    "list_cold",
    "list_warm",
    "list_10_changed",
    "search_rare_word",
    "search_common_word",
    "search_filtered_common_word",
}


def test_benchmark_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sessions", "20", "--turns", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    report = json.loads(line)
    assert (report["sessions"], report["turns"]) == (20, 3)
    assert set(report["ms"]) == FIGURES and set(report["ratio_to_read"]) == FIGURES
    assert all(isinstance(value, (int, float)) and value > 0 for value in report["ms"].values()), report["ms"]
    assert all(value > 0 for value in report["ratio_to_read"].values())
    assert report["megabytes"] > 0 and report["cores"] >= 1
    assert report["hits"]["common_word"] == 20  # every session says "the"


def test_benchmark_prints_a_table_of_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sessions", "10", "--turns", "1", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for figure in FIGURES:
        assert figure in result.stdout
