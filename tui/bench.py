"""`ladder bench`: Ladder's speed, each figure against a baseline measured in the same run.

Absolute times are noisy on shared machines, so every figure is a ratio to something
measured minutes apart on the same machine:

1. tokens/s through Ladder's engine vs a bare llama-cpp-python loop (and llama-bench,
   when a binary is at hand), per model, same threads and prompt;
2. one turn to the whole ladder with each CPU schedule vs the models one after another
   with all cores, and each pane's time to first token vs its solo time;
3. time to first token at turn 10 of a conversation vs turn 1 (the KV cache at work);
4. the chat app with every pane streaming, headless: key-to-screen latency vs the
   same app idle, and the app's own CPU;
5. `ladder` start to a usable composer vs a minimal Textual app;
6. each worker's resident memory vs its model file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tui import store
from tui.cards import ModelCard
from tui.engine.events import Finished, SamplingParams, TurnRequest
from tui.engine.local import Engine
from tui.engine.schedule import DEFAULT_POLICY, POLICIES, available_cores

PROMPT = "What movie do these emoji describe? 🐠🐟🐡🌊 Explain your answer in detail."
STORY = "Write a long story about a lighthouse keeper and a storm."


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=tokens, seed=1, repeat_penalty=1.0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- 1. throughput: engine vs bare loop vs llama-bench -----------------------------------------


def bare_loop(card: ModelCard, path: str, text: str, threads: int, tokens: int) -> dict[str, float]:
    """llama-cpp-python on its own: load, format the same prompt, generate greedily."""
    import llama_cpp

    from tui.engine.prompt import make_formatter

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # llama.cpp's notes would garble the report
    llm = llama_cpp.Llama(path, n_ctx=card.context, n_threads=threads, n_threads_batch=threads, verbose=False)
    bos, eos = llm.token_bos(), llm.token_eos()
    render = make_formatter(card, llm.metadata.get("tokenizer.chat_template"),
                            llm._model.token_get_text(bos) if bos >= 0 else "",
                            llm._model.token_get_text(eos) if eos >= 0 else "")
    prompt = render(user(text))
    ids = llm.tokenize(prompt.text.encode(), add_bos=prompt.add_bos, special=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    for token in llm.generate(ids, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        last = time.perf_counter()
        first = first or last
        count += 1
        if count >= tokens:
            break
    return {"tokens": count, "tokens_per_s": (count - 1) / (last - first) if count > 1 else 0.0,
            "ttft_s": first - start}


def llama_bench(binary: Path, path: Path, threads: int, tokens: int) -> float | None:
    try:
        result = subprocess.run([str(binary), "-m", str(path), "-t", str(threads), "-p", "0", "-n", str(tokens),
                                 "-r", "2", "-o", "json"], capture_output=True, text=True, timeout=600)
        rows = json.loads(result.stdout)
        return float(rows[0]["avg_ts"])
    except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired):
        return None


async def solo_turn(card: ModelCard, text: str, tokens: int, policy: str = "mixed") -> Finished:
    engine = Engine(policy=policy)
    model = engine.model(card)
    try:
        await model.load()
        return [e async for e in model.turn(TurnRequest(user(text), greedy(tokens)))][-1]  # type: ignore[return-value]
    finally:
        await engine.close()


async def throughput(cards: list[ModelCard], tokens: int, llama_bench_binary: Path | None,
                     repeats: int) -> list[dict[str, Any]]:
    """Medians of `repeats` alternating runs of the bare loop and the engine."""
    cores = available_cores()
    rows = []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        for card in cards:
            path = store.ensure_file(card)
            bare_rates, engine_rates = [], []
            for _ in range(repeats):
                bare = await asyncio.get_running_loop().run_in_executor(
                    pool, bare_loop, card, str(path), PROMPT, cores, tokens)
                done = await solo_turn(card, PROMPT, tokens)
                bare_rates.append(bare["tokens_per_s"])
                engine_rates.append(done.tokens_per_s or 0.0)
            engine, bare_rate = statistics.median(engine_rates), statistics.median(bare_rates)
            row = {"model": card.id, "threads": cores, "tokens": done.completion_tokens,
                   "engine_tokens_per_s": engine, "bare_tokens_per_s": bare_rate,
                   "ratio": engine / bare_rate if bare_rate else None}
            if llama_bench_binary:
                row["llama_bench_tokens_per_s"] = llama_bench(llama_bench_binary, path, cores, tokens)
                if row["llama_bench_tokens_per_s"]:
                    row["ratio_to_llama_bench"] = engine / row["llama_bench_tokens_per_s"]
            rows.append(row)
    return rows


# --- 2. the whole ladder: a schedule vs one model after another --------------------------------


async def ladder_turn(cards: list[ModelCard], tokens: int, policy: str) -> dict[str, Any]:
    engine = Engine(policy=policy)
    models = [engine.model(card) for card in cards]
    try:
        await asyncio.gather(*(model.load() for model in models))
        memory = {model.card.id: resident_bytes(model.pid) for model in models}
        start = time.perf_counter()

        async def run(model: Any) -> Finished:
            return [e async for e in model.turn(TurnRequest(user(PROMPT), greedy(tokens)))][-1]  # type: ignore[no-any-return]

        finished = await asyncio.gather(*(run(model) for model in models))
        wall = time.perf_counter() - start
        memory_after = {model.card.id: resident_bytes(model.pid) for model in models}
    finally:
        await engine.close()
    return {"wall_s": wall, "ttft_s": {m.card.id: f.ttft_s for m, f in zip(models, finished)},
            "tokens": {m.card.id: f.completion_tokens for m, f in zip(models, finished)},
            "rss_loaded": memory, "rss_after_turn": memory_after}


async def whole_ladder(cards: list[ModelCard], tokens: int, policies: list[str], repeats: int) -> dict[str, Any]:
    """Medians over `repeats` rounds, each round measuring the baseline and every schedule
    in turn: the machine's noise (often ±15% between minutes) then hits all alike."""
    rounds: list[dict[str, Any]] = []
    for _ in range(repeats):
        solo = {card.id: await solo_turn(card, PROMPT, tokens) for card in cards}
        runs = {policy: await ladder_turn(cards, tokens, policy) for policy in policies}
        rounds.append({"solo": solo, "runs": runs})
    median = statistics.median
    sequential = median(sum(d.elapsed_s for d in r["solo"].values()) for r in rounds)
    solo_ttft = {card.id: median(r["solo"][card.id].ttft_s or 0 for r in rounds) for card in cards}
    result: dict[str, Any] = {"repeats": repeats, "sequential_s": sequential, "solo_ttft_s": solo_ttft,
                              "solo_tokens": {c.id: rounds[-1]["solo"][c.id].completion_tokens for c in cards},
                              "policies": {}}
    for policy in policies:
        run = dict(rounds[-1]["runs"][policy])
        run["wall_s"] = median(r["runs"][policy]["wall_s"] for r in rounds)
        run["ttft_s"] = {c.id: median(r["runs"][policy]["ttft_s"][c.id] or 0 for r in rounds) for c in cards}
        run["ratio"] = run["wall_s"] / sequential
        run["ratios_by_round"] = [r["runs"][policy]["wall_s"] / sum(d.elapsed_s for d in r["solo"].values())
                                  for r in rounds]
        run["ttft_ratio"] = {k: v / (solo_ttft[k] or 1e-9) for k, v in run["ttft_s"].items()}
        result["policies"][policy] = run
    return result


def resident_bytes(pid: int | None) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


# --- 3. the KV cache: time to first token at turn 10 vs turn 1 ---------------------------------


async def kv_reuse(card: ModelCard, turns: int = 10) -> dict[str, Any]:
    engine = Engine()
    model = engine.model(card)
    history: list[dict[str, str]] = []
    ttfts, evaluated = [], []
    try:
        await model.load()
        for n in range(turns):
            history += user(f"Give me one short fact about the number {n + 10}, in one sentence.")
            done = [e async for e in model.turn(TurnRequest(list(history), greedy(24)))][-1]
            assert isinstance(done, Finished)
            history.append({"role": "assistant", "content": done.text})
            ttfts.append(done.ttft_s or 0.0)
            evaluated.append(done.prompt_tokens - done.cached_tokens)
    finally:
        await engine.close()
    return {"model": card.id, "ttft_turn1_s": ttfts[0], f"ttft_turn{turns}_s": ttfts[-1],
            "ratio": ttfts[-1] / ttfts[0] if ttfts[0] else None, "evaluated_tokens": evaluated,
            "prompt_tokens_last": done.prompt_tokens}


# --- 4. the chat app streaming, headless ---------------------------------------------------------


async def app_streaming(cards: list[ModelCard], tokens: int, policy: str) -> dict[str, Any]:
    from textual import events

    from tui.app import AppConfig, LadderApp
    from tui.cards import Catalog
    from tui.screens.chat import ChatScreen
    from tui.widgets.composer import Composer

    engine = Engine(policy=policy)
    sessions = Path(os.environ.get("TMPDIR", "/tmp")) / f"ladder-bench-{os.getpid()}"
    config = AppConfig(catalog=Catalog(), cards=cards, make_backend=engine.model, sessions_dir=sessions,
                       params=greedy(tokens), engine_info={"schedule": policy, "cores": engine.cores})
    app = LadderApp(config)
    painted: list[float] = []  # when the screen was last drawn

    async def key_latencies(pilot: Any, count: int) -> list[float]:
        composer = app.screen.query_one(Composer)
        results = []
        for n in range(count):
            char = "abcdefghij"[n % 10]
            before = len(painted)
            start = time.perf_counter()
            composer.post_message(events.Key(char, char))
            while not composer.text.endswith(char):
                await asyncio.sleep(0.0005)
            while len(painted) == before or painted[-1] < start:
                await asyncio.sleep(0.0005)
            results.append(painted[-1] - start)
            await asyncio.sleep(0.12)
        return results

    async with app.run_test(size=(200, 50)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        refresh = screen._compositor_refresh

        def counted_refresh() -> None:
            refresh()
            painted.append(time.perf_counter())

        screen._compositor_refresh = counted_refresh  # type: ignore[method-assign]
        for _ in range(600):
            await asyncio.sleep(0.1)
            if all(pane.state == "ready" for pane in screen.panes.values()):
                break
        screen.query_one(Composer).focus()
        idle = await key_latencies(pilot, 10)
        screen.query_one(Composer).clear()
        screen.send_turn(STORY)
        await asyncio.sleep(1.0)
        cpu, wall = time.process_time(), time.perf_counter()
        busy = await key_latencies(pilot, 30)
        streaming = any(pane.state == "streaming" for pane in screen.panes.values())
        ui_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
        await screen.action_cancel_all()
    await engine.close()
    return {"key_latency_idle_ms": _percentiles(idle), "key_latency_streaming_ms": _percentiles(busy),
            "ui_cpu_share_of_one_core": ui_cpu, "still_streaming_at_end": streaming}


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": 1000 * statistics.median(ordered), "p95": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
            "max": 1000 * ordered[-1]}


# --- 5. start-up --------------------------------------------------------------------------------

STARTUP = """
import asyncio, sys, time
start = time.perf_counter()
{imports}
async def main():
    app = {make_app}
    async with app.run_test(size=(160, 40)) as pilot:
        while not {ready}:
            await asyncio.sleep(0.005)
        print(time.perf_counter() - start)
        {stop}
asyncio.run(main())
"""

LADDER_APP = dict(
    imports="from tui.cli import build_parser\nfrom tui.app import run_app, LadderApp, AppConfig\n"
            "from tui.cards import load_catalog, select_models\nfrom tui.engine.local import Engine\n"
            "from tui import paths",
    make_app="LadderApp(AppConfig(catalog=load_catalog(), cards=select_models(load_catalog(), None, []), "
             "make_backend=Engine().model, sessions_dir=paths.sessions_dir()))",
    ready="(app.focused is not None and type(app.focused).__name__ == 'Composer')",
    stop="await app.session.close()",
)
MINIMAL_APP = dict(
    imports="from textual.app import App\nfrom textual.widgets import TextArea",
    make_app="type('Minimal', (App,), {'compose': lambda self: iter([TextArea()])})()",
    ready="(app.focused is not None or bool(app.query('TextArea')))",
    stop="pass",
)


def startup_time(kind: dict[str, str]) -> float:
    """Seconds from starting Python to the app being usable, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", STARTUP.format(**kind)], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "start-up failed")
    return float(result.stdout.strip().splitlines()[-1])


def startup(repeats: int = 3) -> dict[str, float]:
    ladder = statistics.median(startup_time(LADDER_APP) for _ in range(repeats))
    minimal = statistics.median(startup_time(MINIMAL_APP) for _ in range(repeats))
    return {"ladder_s": ladder, "minimal_textual_s": minimal, "ratio": ladder / minimal}


# --- running it all -----------------------------------------------------------------------------


async def run(cards: list[ModelCard], args: argparse.Namespace) -> dict[str, Any]:
    policies = args.schedule or sorted(POLICIES)
    report: dict[str, Any] = {"machine": {"cores": available_cores(), "cpu": platform.processor() or platform.machine(),
                                          "python": platform.python_version()},
                              "models": [card.id for card in cards], "tokens": args.tokens}
    skip = set(args.skip or [])
    if "throughput" not in skip:
        report["throughput"] = await throughput(cards, args.tokens, args.llama_bench, 1 if args.quick else args.repeat)
    if "ladder" not in skip:
        report["ladder"] = await whole_ladder(cards, args.tokens, policies, 1 if args.quick else args.repeat)
        memory = report["ladder"]["policies"][policies[0]]
        report["memory"] = [{"model": card.id, "file_bytes": card.size or store.ensure_file(card).stat().st_size,
                             "rss_loaded": memory["rss_loaded"][card.id], "rss_after_turn": memory["rss_after_turn"][card.id]}
                            for card in cards]
        for row in report["memory"]:
            row["ratio"] = (row["rss_after_turn"] or 0) / row["file_bytes"]
    if "kv" not in skip:
        report["kv_cache"] = [await kv_reuse(card, args.turns) for card in cards]
    if "app" not in skip:
        report["app"] = await app_streaming(cards, args.tokens * 2,
                                            DEFAULT_POLICY if DEFAULT_POLICY in policies else policies[0])
    if "startup" not in skip:
        report["startup"] = startup(1 if args.quick else 3)
    return report


def build_llama_bench() -> Path:
    """Build llama-bench from the llama.cpp source that llama-cpp-python vendors (the same
    version), once, into the cache. Takes several minutes; needs cmake and a compiler."""
    import tarfile
    import tempfile
    from importlib import metadata

    from tui import paths

    target = paths.cache_dir() / "llama-bench" / metadata.version("llama-cpp-python") / "llama-bench"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as work:
        version = metadata.version("llama-cpp-python")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", work], check=True)
        archive = next(Path(work).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = next(Path(work).glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = Path(work) / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(available_cores())],
                       check=True)
        built = next(build.rglob("llama-bench"))
        target.parent.mkdir(parents=True, exist_ok=True)
        for library in build.rglob("*.so*"):  # llama-bench links llama.cpp's shared libraries
            (target.parent / library.name).write_bytes(library.read_bytes())
        target.write_bytes(built.read_bytes())
        target.chmod(0o755)
    return target


def run_bench(args: argparse.Namespace, cards: list[ModelCard]) -> int:
    binary = args.llama_bench
    if args.build_llama_bench:
        binary = build_llama_bench()
    elif binary is None:
        from importlib import metadata

        from tui import paths

        cached = paths.cache_dir() / "llama-bench" / metadata.version("llama-cpp-python") / "llama-bench"
        binary = cached if cached.is_file() else None
    args.llama_bench = binary
    report = asyncio.run(run(cards, args))
    if args.json:
        print(json.dumps(report))
    else:
        from tui.bench_report import report_table

        print(report_table(report))
        print("\n" + json.dumps(report))
    return 0
