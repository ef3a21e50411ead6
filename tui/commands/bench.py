"""`ladder bench`: Ladder's speed, each figure against a baseline measured in the same run.

Absolute times are noisy on shared machines, so every figure is a ratio to something
measured minutes apart on the same machine:

1. tokens/s through Ladder's engine vs a bare llama-cpp-python loop (and llama-bench,
   when a binary is at hand), per model, same threads and prompt;
2. one turn to the whole ladder with each CPU schedule (`auto` last, with what it chose)
   vs the models one after another with all cores, and each pane's time to first token vs
   its bound: its prompt and those served before it, each at its solo speed;
3. time to first token at turn 10 of a conversation vs turn 1 (the KV cache at work);
4. the chat app in a real terminal (tmux, 200×50) with every pane streaming: how often each
   pane's text changes on the screen, the app's own CPU, and key-to-screen latency vs the
   same app before the turn;
5. `ladder` start to a usable composer vs a minimal Textual app;
6. each worker's resident memory vs its model file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tui import paths, store
from tui.cards import ModelCard, load_catalog, select_models
from tui.commands import output
from tui.commands.bench_app import app_streaming, app_table, startup
from tui.commands.bench_models import kv_reuse, schedule_order, throughput, whole_ladder
from tui.commands.options import UsageError
from tui.engine.schedule import AUTO, DEFAULT_POLICY, SCHEDULES, available_cores


def run(args: argparse.Namespace) -> int:
    if args.tokens < 8 or args.turns < 2 or args.repeat < 1:
        raise UsageError("--tokens must be at least 8, --turns at least 2 and --repeat at least 1")
    cards = select_models(load_catalog(), args.lineup, args.model)
    remote = [card.id for card in cards if card.endpoint]
    if remote:  # its speed is its server's: llama-bench and the bare loop have nothing to compare
        raise UsageError(
            f"bench measures local models only; {', '.join(remote)} runs on a server: "
            "leave it out of --model and --lineup"
        )
    llama_bench = args.llama_bench
    if args.build_llama_bench:
        llama_bench = build_llama_bench()
    elif llama_bench is None and cached_llama_bench().is_file():
        llama_bench = cached_llama_bench()
    report = asyncio.run(measure(cards, args, llama_bench))
    if not args.json:
        print(report_table(report) + "\n")
    print(json.dumps(report))
    return 0


async def measure(cards: list[ModelCard], args: argparse.Namespace, llama_bench: Path | None) -> dict[str, Any]:
    """Every figure not skipped, as the JSON report."""
    policies = schedule_order(args.schedule or list(SCHEDULES))
    report: dict[str, Any] = {
        "machine": {
            "cores": available_cores(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "models": [card.id for card in cards],
        "tokens": args.tokens,
    }
    skip = set(args.skip or [])
    if "throughput" not in skip:
        report["throughput"] = await throughput(cards, args.tokens, llama_bench, 1 if args.quick else args.repeat)
    if "ladder" not in skip:
        report["ladder"] = await whole_ladder(cards, args.tokens, policies, 1 if args.quick else args.repeat)
        report["memory"] = memory_rows(cards, report["ladder"]["policies"][policies[0]])
    if "kv" not in skip:
        report["kv_cache"] = [await kv_reuse(card, args.turns) for card in cards]
    if "app" not in skip:
        report["app"] = await app_streaming(
            cards, DEFAULT_POLICY if DEFAULT_POLICY in policies else policies[0], quick=args.quick
        )
    if "startup" not in skip:
        report["startup"] = startup(1 if args.quick else 3)
    return report


def memory_rows(cards: list[ModelCard], run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each worker after a turn of the whole ladder: its file, what it holds (resident, and its
    proportional share, which counts the libraries every worker maps once), and the parts it held
    once loaded; then the total of all against the total of the files."""
    rows: list[dict[str, Any]] = []
    for card in cards:
        after = run["memory_after_turn"][card.id] or {}
        row: dict[str, Any] = {"model": card.id, "file_bytes": card.size or store.ensure_file(card).stat().st_size}
        row |= {"rss": after.get("rss"), "pss": after.get("pss"), "parts": run["memory_loaded"][card.id]}
        rows.append(row)
    total: dict[str, Any] = {"model": "all", "file_bytes": sum(row["file_bytes"] for row in rows)}
    for key in ("rss", "pss"):
        total[key] = sum(row[key] or 0 for row in rows)
    for row in [*rows, total]:
        row["rss_ratio"] = (row["rss"] or 0) / row["file_bytes"]
        row["pss_ratio"] = (row["pss"] or 0) / row["file_bytes"]
    return [*rows, total]


def report_table(report: dict[str, Any]) -> str:
    """The six figures as text, each with its baseline and the goal."""
    lines = [
        f"Ladder bench · {report['machine']['cores']} cores · {report['machine']['cpu']} · "
        f"{report['tokens']} tokens per reply"
    ]

    def fmt(value: Any, pattern: str = "{:.2f}") -> str:
        return "-" if value is None else pattern.format(value)

    if "throughput" in report:
        rows: list[tuple[str, ...]] = [
            ("1. tokens/s (median)", "engine", "bare loop", "ratio (goal ≥ 0.95)", "llama-bench", "ratio")
        ]
        for row in report["throughput"]:
            rows.append(
                (
                    row["model"],
                    fmt(row["engine_tokens_per_s"], "{:.1f}"),
                    fmt(row["bare_tokens_per_s"], "{:.1f}"),
                    fmt(row["ratio"]),
                    fmt(row.get("llama_bench_tokens_per_s"), "{:.1f}"),
                    fmt(row.get("ratio_to_llama_bench")),
                )
            )
        lines += ["", output.table(rows)]
    if "ladder" in report:
        ladder = report["ladder"]
        rows = [
            (
                f"2. whole ladder (median of {ladder['repeats']})",
                "wall s",
                "one after another s",
                "ratio (goal ≤ 0.95)",
                "each round",
                "worst TTFT / its bound",
            )
        ]
        for policy, run in ladder["policies"].items():
            worst = max(run["ttft_bound_ratio"].items(), key=lambda kv: kv[1])
            chosen = f" → {' '.join(run['chosen_by_round'])}" if policy == AUTO else ""
            rows.append(
                (
                    f"schedule {policy}{chosen}",
                    fmt(run["wall_s"]),
                    fmt(ladder["sequential_s"]),
                    fmt(run["ratio"]),
                    " ".join(f"{r:.2f}" for r in run["ratios_by_round"]),
                    f"{worst[1]:.2f} ({worst[0]})",
                )
            )
        lines += ["", output.table(rows)]
        if AUTO in ladder["policies"]:
            lines.append(f"   last round: {ladder['policies'][AUTO]['note']}")
        # A first token cannot come before its prompt and the prompts served before it, each as
        # fast as alone on every core: that sum is its bound.
        rows = [("   TTFT s", "solo", "bound", *(f"{policy} (/ bound)" for policy in ladder["policies"]))]
        for model, solo in ladder["solo_ttft_s"].items():
            rows.append(
                (
                    model,
                    fmt(solo),
                    fmt(ladder["ttft_bound_s"][model]),
                    *(
                        f"{run['ttft_s'][model]:.2f} ({run['ttft_bound_ratio'][model]:.2f}x)"
                        for run in ladder["policies"].values()
                    ),
                )
            )
        lines += ["", output.table(rows)]
    if "kv_cache" in report:
        rows = [("3. KV cache", "TTFT turn 1 s", "TTFT turn 10 s", "ratio (goal ≤ 1.2)", "tokens evaluated t1 / t10")]
        for row in report["kv_cache"]:
            last = [k for k in row if k.startswith("ttft_turn") and k != "ttft_turn1_s"][0]
            rows.append(
                (
                    row["model"],
                    fmt(row["ttft_turn1_s"]),
                    fmt(row[last]),
                    fmt(row["ratio"]),
                    f"{row['evaluated_tokens'][0]} / {row['evaluated_tokens'][-1]}",
                )
            )
        lines += ["", output.table(rows)]
    if "app" in report:
        lines += ["", *app_table(report["app"])]
    if "startup" in report:
        start = report["startup"]
        lines += [
            "",
            f"5. start to usable composer: {start['ladder_s']:.2f} s (goal ≤ 1 s); a minimal Textual app: "
            f"{start['minimal_textual_s']:.2f} s; ratio {start['ratio']:.2f}",
        ]
    if "memory" in report:
        mb = "{:.0f}"
        rows = [
            (
                "6. memory after a turn, MB",
                "file",
                "resident",
                "ratio (goal ≤ 1.3)",
                "share",
                "ratio",
                "libraries",
                "weights",
                "KV cache",
                "other",
            )
        ]
        for row in report["memory"]:
            parts = row.get("parts") or {}
            rows.append(
                (
                    row["model"],
                    mb.format(row["file_bytes"] / 1e6),
                    fmt((row["rss"] or 0) / 1e6, mb),
                    fmt(row["rss_ratio"]),
                    fmt((row["pss"] or 0) / 1e6, mb),
                    fmt(row["pss_ratio"]),
                    *(
                        fmt(parts[key] / 1e6, mb) if key in parts else ""
                        for key in ("libraries", "weights", "kv_cache", "other")
                    ),
                )
            )
        lines += [
            "",
            output.table(rows),
            "   share: the proportional set size (libraries mapped by every worker count once); parts as loaded",
        ]
    return "\n".join(lines)


def build_llama_bench() -> Path:
    """Build llama-bench from the llama.cpp source that llama-cpp-python vendors (the same
    version), once, into the cache. Takes several minutes; needs cmake and a compiler."""
    import tarfile
    import tempfile

    target = cached_llama_bench()
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as work:
        version = metadata.version("llama-cpp-python")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                work,
            ],
            check=True,
        )
        archive = next(Path(work).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = next(Path(work).glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = Path(work) / "build"
        subprocess.run(
            [
                "cmake",
                "-S",
                str(source),
                "-B",
                str(build),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                *build_flags(),
            ],
            check=True,
        )
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(available_cores())], check=True
        )
        built = built_binary(build, "llama-bench")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)
        target.chmod(0o755)
    return target


# The README's portable build of llama-cpp-python (x86-64-v3): llama-bench is built the same way, so the
# two are compared like for like. CMAKE_ARGS, as pip reads it, overrides them.
PORTABLE_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"


def build_flags() -> list[str]:
    return shlex.split(os.environ.get("CMAKE_ARGS") or PORTABLE_FLAGS)


def built_binary(build: Path, name: str) -> Path:
    """Where CMake put an executable: `bin/` of the build folder (the folder of the same name
    elsewhere in the tree holds its CMake files, not the program)."""
    path = build / "bin" / name
    if not path.is_file():
        raise RuntimeError(f"the build finished but made no {path}; see the build's output above")
    return path


def cached_llama_bench() -> Path:
    """Where `--build-llama-bench` puts llama-bench, one per llama-cpp-python version."""
    return paths.cache_dir() / "llama-bench" / metadata.version("llama-cpp-python") / "llama-bench"
