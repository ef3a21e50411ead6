"""How fast `ladder sessions` lists and searches a large collection (a benchmark, not a test).

    python tests/bench/bench_sessions.py [--sessions 1000] [--turns 20] [--repeat 3] [--json]

Writes N synthetic transcripts of T turns each (four models, replies of 60-150 words from
a Zipf-distributed vocabulary, some scenarios, dates spread over six months) with the real
TranscriptWriter into a temporary folder, then times listing and searching there, each the
median of --repeat runs. Reading every file's bytes is timed too, as the floor the other
figures are relative to. The index goes to the temporary folder, never to your cache.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from tui import archive, transcript
from tui.transcript import TranscriptWriter, append_event

LINEUPS = {
    "offline": [
        ("smollm2-135m-instruct", 134_515_008),
        ("gemma-3-270m", 268_098_176),
        ("qwen2.5-0.5b-instruct", 494_032_768),
        ("qwen2.5-1.5b-instruct", 1_543_714_304),
    ],
    "smollm2": [
        ("smollm2-135m-instruct", 134_515_008),
        ("smollm2-360m-instruct", 361_821_120),
        ("qwen2.5-0.5b-instruct", 494_032_768),
        ("smollm2-1.7b-instruct", 1_711_376_384),
    ],
}
SCENARIOS = [None, None, "emoji-movies", "linux-terminal", "arithmetic", "bias"]
RARE = "quokka"  # put into a handful of replies
COMMON = "the"  # in nearly every reply
COMMON_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "it",
    "for",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "but",
    "not",
    "have",
    "an",
    "they",
    "you",
    "model",
    "answer",
    "because",
    "however",
    "when",
    "there",
    "their",
    "would",
    "what",
    "about",
    "can",
    "more",
    "one",
]


def vocabulary(rng: random.Random, size: int = 6000) -> tuple[list[str], list[float]]:
    """Common words, then made-up ones, weighted by Zipf's law like real text (as cumulative
    weights, which random.choices would otherwise add up on every call)."""
    made_up = set()
    while len(made_up) < size:
        made_up.add("".join(rng.choice("abcdefghiklmnoprstuvwy") for _ in range(rng.randint(3, 10))))
    made_up -= {RARE, *COMMON_WORDS}
    words = list(COMMON_WORDS) + sorted(made_up)
    return words, list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))


def sentence(rng: random.Random, words: list[str], weights: list[float], count: int) -> str:
    picked = rng.choices(words, cum_weights=weights, k=count)
    for n in range(0, count, rng.randint(8, 20)):  # sentences, some punctuation, a quote now and then
        picked[n] = picked[n].capitalize()
        if n:
            picked[n - 1] += rng.choice([".", ".", ",", "?", "!", ':\n"', '."\n'])
    return " ".join(picked) + "."


def generate(directory: Path, sessions: int, turns: int, seed: int = 1) -> int:
    """Writes the transcripts; returns how many replies mention the rare word."""
    rng = random.Random(seed)
    words, weights = vocabulary(rng)
    start = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)
    clock = [start]
    original_now = transcript.now
    transcript.now = lambda: clock[0].isoformat(timespec="seconds")  # dates spread over months
    rare = 0
    try:
        for number in range(sessions):
            clock[0] = start + timedelta(days=rng.uniform(0, 180))
            lineup = rng.choice(list(LINEUPS))
            scenario = rng.choice(SCENARIOS)
            models = [
                {
                    "id": model_id,
                    "name": model_id,
                    "family": model_id.split("-")[0],
                    "params": params,
                    "quant": "Q4_K_M",
                    "size": params // 2,
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "context": 4096,
                    "chat_format": "gguf",
                    "instruct": True,
                    "license": "apache-2.0",
                    "gpu_layers": 0,
                    "origin": "bench",
                    "sources": ["pypi:bench"],
                }
                for model_id, params in LINEUPS[lineup]
            ]
            header = {
                "app": "ladder 0.1.0",
                "llama_cpp_python": "0.3.36",
                "lineup": lineup,
                "models": models,
                "params": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512},
                "model_params": {},
                "system": "You are a helpful assistant.",
                "engine": {"schedule": "baton", "cores": 2},
                "scenario": {"id": scenario, "title": scenario, "check": "answer"} if scenario else None,
            }
            first = sentence(rng, words, weights, rng.randint(6, 25)).rstrip(".") + "?"
            writer = TranscriptWriter(directory, header, name=f"{number:05d} {first}")
            for turn in range(1, turns + 1):
                prompt = first if turn == 1 else sentence(rng, words, weights, rng.randint(5, 40))
                writer.write({"type": "user", "turn": turn, "text": prompt})
                for model_id, _ in LINEUPS[lineup]:
                    text = sentence(rng, words, weights, rng.randint(60, 150))
                    if rng.random() < 0.0005:
                        text = text.replace(" ", f" {RARE} ", 1)
                        rare += 1
                    clock[0] += timedelta(seconds=rng.uniform(1, 20))
                    tokens = len(text) // 4
                    writer.write(
                        {
                            "type": "reply",
                            "turn": turn,
                            "model": model_id,
                            "status": "done",
                            "finish_reason": "stop",
                            "text": text,
                            "error": None,
                            "prompt_tokens": 40 * turn,
                            "cached_tokens": 30 * turn,
                            "completion_tokens": tokens,
                            "ttft_s": round(rng.uniform(0.1, 2), 3),
                            "tokens_per_s": round(rng.uniform(5, 60), 3),
                            "elapsed_s": round(rng.uniform(1, 20), 3),
                            "params": {"temperature": 0.7, "top_p": 0.95, "seed": rng.getrandbits(31)},
                            "notices": [],
                            **(
                                {"check": {"kind": "answer", "passed": rng.random() < 0.5, "reason": "expected x"}}
                                if scenario
                                else {}
                            ),
                        }
                    )
            writer.close()
    finally:
        transcript.now = original_now
    return rare


def timed(action: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> tuple[float, Any]:
    """Median milliseconds of `repeat` runs (`before` runs untimed ahead of each), and the last result."""
    times, result = [], None
    for _ in range(repeat):
        if before is not None:
            before()
        began = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.sessions < 10 or args.turns < 1 or args.repeat < 1:
        parser.error("--sessions must be at least 10 (ten are changed), --turns and --repeat at least 1")

    with tempfile.TemporaryDirectory(prefix="ladder-bench-") as temp:
        folder, index = Path(temp) / "sessions", Path(temp) / "index.json"
        began = time.perf_counter()
        rare = generate(folder, args.sessions, args.turns)
        generate_s = time.perf_counter() - began
        files = sorted(folder.glob("*.jsonl"))
        total_bytes = sum(path.stat().st_size for path in files)
        rng = random.Random(2)

        def read_all() -> int:
            return sum(len(path.read_bytes()) for path in files)

        def change_ten() -> None:
            for path in rng.sample(files, 10):
                append_event(path, {"type": "note", "turn": 1, "text": "changed by the benchmark"})

        def list_all() -> list[archive.SessionSummary]:
            return archive.list_sessions(folder, index=index)

        def search(text: str | None, **filters: str) -> Callable[[], list[archive.SearchHit]]:
            return lambda: archive.search(folder, text, index=index, **filters)

        results: dict[str, float] = {}
        results["read_all_bytes"], _ = timed(read_all, args.repeat)
        results["list_cold"], listed = timed(list_all, args.repeat, before=lambda: index.unlink(missing_ok=True))
        results["list_warm"], _ = timed(list_all, args.repeat)
        results["list_10_changed"], _ = timed(list_all, args.repeat, before=change_ten)
        results["search_rare_word"], rare_hits = timed(search(RARE), args.repeat)
        results["search_common_word"], common_hits = timed(search(COMMON), args.repeat)
        filters = {"model": "gemma", "scenario": "emoji-movies"}
        results["search_filtered_common_word"], filtered_hits = timed(search(COMMON, **filters), args.repeat)
        assert len(listed) == args.sessions, f"listed {len(listed)} of {args.sessions} sessions"

    report = {
        "sessions": args.sessions,
        "turns": args.turns,
        "repeat": args.repeat,
        "cores": os.cpu_count(),
        "megabytes": round(total_bytes / 1e6, 2),
        "generate_s": round(generate_s, 2),
        "ms": {name: round(value, 2) for name, value in results.items()},
        "ratio_to_read": {name: round(value / results["read_all_bytes"], 2) for name, value in results.items()},
        "hits": {
            "rare_word": len(rare_hits),
            "rare_replies": rare,
            "common_word": len(common_hits),
            "filtered_common_word": len(filtered_hits),
        },
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.sessions} sessions x {args.turns} turns, {report['megabytes']} MB, {os.cpu_count()} cores "
        f"(written in {generate_s:.1f}s); median of {args.repeat}\n"
    )
    width = max(map(len, results))
    print(f"{'':{width}}  {'ms':>9}  {'x read':>7}  hits")
    hits = {
        "search_rare_word": len(rare_hits),
        "search_common_word": len(common_hits),
        "search_filtered_common_word": len(filtered_hits),
    }
    for name, value in results.items():
        print(f"{name:{width}}  {value:9.1f}  {report['ratio_to_read'][name]:7.2f}  {hits.get(name, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
