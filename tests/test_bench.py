"""`ladder bench` runs on the smallest model and emits a well-formed report. Its numbers
are not checked here: timings belong in the benchmark, not in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.model
@pytest.mark.timeout(900)  # a whole bench: beside another busy process it took over 5 minutes
def test_bench_runs_on_the_smallest_model_and_reports_every_figure() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "bench",
            "--model",
            "smollm2-135m-instruct",
            "--tokens",
            "8",
            "--turns",
            "2",
            "--quick",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=840,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    for figure in ("1. tokens/s", "2. whole ladder", "3. KV cache", "4. chat app", "5. start", "6. memory"):
        assert figure in result.stdout  # the table, then the JSON report on its last line
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["models"] == ["smollm2-135m-instruct"] and report["machine"]["cores"] >= 1
    (row,) = report["throughput"]
    assert row["engine_tokens_per_s"] > 0 and row["bare_tokens_per_s"] > 0 and row["ratio"] > 0
    ladder = report["ladder"]
    assert ladder["sequential_s"] > 0 and set(ladder["policies"]) == {"baton", "mixed", "split"}
    for run in ladder["policies"].values():
        assert run["wall_s"] > 0 and run["ratio"] > 0 and run["ttft_ratio"]["smollm2-135m-instruct"] > 0
    (kv,) = report["kv_cache"]
    assert kv["ttft_turn1_s"] > 0 and kv["ratio"] > 0 and len(kv["evaluated_tokens"]) == 2
    app = report["app"]
    for latency in (app["key_latency_idle_ms"], app["key_latency_streaming_ms"]):
        assert all(latency[key] > 0 for key in ("p50", "p95", "max")), latency  # every key was timed to the screen
    # The app drew 40 keystrokes and a streaming reply: it used some CPU, and one process cannot
    # use more than the machine's cores.
    assert 0 < app["ui_cpu_share_of_one_core"] <= report["machine"]["cores"]
    assert report["startup"]["ladder_s"] > 0 and report["startup"]["minimal_textual_s"] > 0
    (memory,) = report["memory"]
    assert memory["file_bytes"] == 98362432 and memory["rss_after_turn"] > 0
