"""The `ladder bench` report as a text table: each figure beside its baseline and goal."""

from __future__ import annotations

from typing import Any


def report_table(report: dict[str, Any]) -> str:
    """The six figures as text, each with its baseline and the goal."""
    from tui.ask import table

    lines = [f"Ladder bench · {report['machine']['cores']} cores · {report['machine']['cpu']} · "
             f"{report['tokens']} tokens per reply"]

    def fmt(value: Any, pattern: str = "{:.2f}") -> str:
        return "-" if value is None else pattern.format(value)

    if "throughput" in report:
        rows = [("1. tokens/s (median)", "engine", "bare loop", "ratio (goal ≥ 0.95)", "llama-bench", "ratio")]
        for row in report["throughput"]:
            rows.append((row["model"], fmt(row["engine_tokens_per_s"], "{:.1f}"), fmt(row["bare_tokens_per_s"], "{:.1f}"),
                         fmt(row["ratio"]), fmt(row.get("llama_bench_tokens_per_s"), "{:.1f}"),
                         fmt(row.get("ratio_to_llama_bench"))))
        lines += ["", table(rows)]
    if "ladder" in report:
        ladder = report["ladder"]
        rows = [(f"2. whole ladder (median of {ladder['repeats']})", "wall s", "one after another s",
                 "ratio (goal ≤ 1.0)", "each round", "worst TTFT ratio (goal ≤ 2)")]
        for policy, run in ladder["policies"].items():
            worst = max(run["ttft_ratio"].items(), key=lambda kv: kv[1])
            rows.append((f"schedule {policy}", fmt(run["wall_s"]), fmt(ladder["sequential_s"]), fmt(run["ratio"]),
                         " ".join(f"{r:.2f}" for r in run["ratios_by_round"]), f"{worst[1]:.2f} ({worst[0]})"))
        lines += ["", table(rows)]
        rows = [("   TTFT s", "solo", *ladder["policies"])]
        for model, solo in ladder["solo_ttft_s"].items():
            rows.append((model, fmt(solo), *(f"{run['ttft_s'][model]:.2f} ({run['ttft_ratio'][model]:.1f}x)"
                                             for run in ladder["policies"].values())))
        lines += ["", table(rows)]
    if "kv_cache" in report:
        rows = [("3. KV cache", "TTFT turn 1 s", "TTFT turn 10 s", "ratio (goal ≤ 1.2)", "tokens evaluated t1 / t10")]
        for row in report["kv_cache"]:
            last = [k for k in row if k.startswith("ttft_turn") and k != "ttft_turn1_s"][0]
            rows.append((row["model"], fmt(row["ttft_turn1_s"]), fmt(row[last]), fmt(row["ratio"]),
                         f"{row['evaluated_tokens'][0]} / {row['evaluated_tokens'][-1]}"))
        lines += ["", table(rows)]
    if "app" in report:
        app = report["app"]
        rows = [("4. chat app, 4 panes streaming", "p50 ms", "p95 ms", "max ms"),
                ("key to screen, idle (baseline)", *(fmt(app["key_latency_idle_ms"][k], "{:.1f}") for k in ("p50", "p95", "max"))),
                ("key to screen, streaming (goal p95 ≤ 50)",
                 *(fmt(app["key_latency_streaming_ms"][k], "{:.1f}") for k in ("p50", "p95", "max")))]
        lines += ["", table(rows), f"   app's own CPU while streaming: {100 * app['ui_cpu_share_of_one_core']:.1f}% "
                  "of one core (goal ≤ 10%)"]
    if "startup" in report:
        start = report["startup"]
        lines += ["", f"5. start to usable composer: {start['ladder_s']:.2f} s (goal ≤ 1 s); a minimal Textual app: "
                  f"{start['minimal_textual_s']:.2f} s; ratio {start['ratio']:.2f}"]
    if "memory" in report:
        rows = [("6. memory", "file MB", "RSS loaded MB", "RSS after a turn MB", "ratio to file")]
        for row in report["memory"]:
            rows.append((row["model"], f"{row['file_bytes'] / 1e6:.0f}", fmt((row["rss_loaded"] or 0) / 1e6, "{:.0f}"),
                         fmt((row["rss_after_turn"] or 0) / 1e6, "{:.0f}"), fmt(row["ratio"])))
        lines += ["", table(rows)]
    return "\n".join(lines)
