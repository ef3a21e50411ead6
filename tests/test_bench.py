"""`ladder bench` runs on the smallest model and emits a well-formed report. Its numbers
are not checked here: timings belong in the benchmark, not in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripted import card

from tui.commands.bench import build_flags, built_binary, report_table
from tui.commands.bench_models import ttft_bounds


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
    assert ladder["sequential_s"] > 0 and list(ladder["policies"]) == ["baton", "mixed", "split", "auto"]
    # One model: its first token's bound is its own solo time.
    assert ladder["ttft_bound_s"] == ladder["solo_ttft_s"]
    for run in ladder["policies"].values():
        assert run["wall_s"] > 0 and run["ratio"] > 0 and run["ttft_ratio"]["smollm2-135m-instruct"] > 0
        assert run["worst_ttft_bound_ratio"] == run["ttft_bound_ratio"]["smollm2-135m-instruct"] > 0
    auto = ladder["policies"]["auto"]
    assert auto["chosen_by_round"] == ["baton"]
    assert auto["note"] == "auto → baton (one model: every policy runs the same)"
    assert "schedule auto → baton" in result.stdout and f"last round: {auto['note']}" in result.stdout
    (kv,) = report["kv_cache"]
    assert kv["ttft_turn1_s"] > 0 and kv["ratio"] > 0 and len(kv["evaluated_tokens"]) == 2
    app = report["app"]
    for latency in (app["key_latency_idle_ms"], app["key_latency_streaming_ms"]):
        assert all(latency[key] > 0 for key in ("p50", "p95", "max")), latency  # every key was timed to the screen
    # The app drew 40 keystrokes and a streaming reply: it used some CPU, and one process cannot
    # use more than the machine's cores.
    assert 0 < app["ui_cpu_share_of_one_core"] <= report["machine"]["cores"]
    assert report["startup"]["ladder_s"] > 0 and report["startup"]["minimal_textual_s"] > 0
    memory, total = report["memory"]  # the model, then the total of all
    assert memory["file_bytes"] == 98362432 and memory["rss"] > 0 and 0 < memory["pss"] <= memory["rss"]
    parts = memory["parts"]
    assert parts["weights"] > 0 and parts["kv_cache"] > 0 and parts["libraries"] > 0 and parts["other"] >= 0
    assert (total["model"], total["file_bytes"], total["rss"]) == ("all", memory["file_bytes"], memory["rss"])


def test_the_built_llama_bench_is_found_in_bin_not_in_the_folder_of_its_cmake_files(tmp_path: Path) -> None:
    """CMake's build tree has tools/llama-bench/ (its CMake files) as well as bin/llama-bench (the
    program); `--build-llama-bench` once took the folder and failed with a traceback."""
    (tmp_path / "tools" / "llama-bench" / "CMakeFiles").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="made no .*bin/llama-bench"):
        built_binary(tmp_path, "llama-bench")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "llama-bench").write_bytes(b"\x7fELF")
    assert built_binary(tmp_path, "llama-bench") == tmp_path / "bin" / "llama-bench"


def test_llama_bench_is_built_with_the_flags_llama_cpp_python_was_installed_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    assert "-DGGML_NATIVE=OFF" in build_flags()  # the README's portable build
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_CUDA=on -DGGML_NATIVE=ON")
    assert build_flags() == ["-DGGML_CUDA=on", "-DGGML_NATIVE=ON"]


def test_each_first_tokens_bound_is_the_prompts_served_before_it_and_its_own() -> None:
    """Prompts are served least work (size × tokens) first: the 1.5B model's 10 tokens (15e9) go
    before the 0.5B's 40 (20e9), though it is larger; the 135M's 60 go first."""
    cards = [card("135m", 135_000_000), card("0.5b", 500_000_000), card("1.5b", 1_500_000_000)]
    solo = {"135m": 0.3, "0.5b": 0.5, "1.5b": 0.4}
    bounds = ttft_bounds(cards, solo, {"135m": 60, "0.5b": 40, "1.5b": 10})
    assert bounds == {"135m": 0.3, "1.5b": pytest.approx(0.7), "0.5b": pytest.approx(1.2)}


def test_figure_2_shows_each_first_token_against_its_bound_and_what_auto_chose() -> None:
    note = "auto → mixed (predicted 0.88× baton, from 6 turns here)"
    run = {
        "wall_s": 2.0,
        "ratio": 0.9,
        "ratios_by_round": [0.9],
        "ttft_s": {"a": 0.6, "b": 0.9},
        "ttft_bound_ratio": {"a": 2.0, "b": 1.5},
    }
    ladder = {
        "repeats": 1,
        "sequential_s": 2.2,
        "solo_ttft_s": {"a": 0.3, "b": 0.3},
        "ttft_bound_s": {"a": 0.3, "b": 0.6},
        "policies": {
            "baton": run,
            "auto": {**run, "chosen_by_round": ["mixed"], "note": note},
        },
    }
    table = report_table({"machine": {"cores": 2, "cpu": "x86_64"}, "tokens": 8, "ladder": ladder})
    assert "schedule auto → mixed" in table
    assert f"last round: {note}" in table
    assert "worst TTFT / its bound" in table and "2.00 (a)" in table  # the worst measured / bound, and whose
    assert "0.60 (2.00x)" in table and "0.90 (1.50x)" in table  # each TTFT beside its ratio to its bound
