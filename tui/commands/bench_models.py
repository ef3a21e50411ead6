"""`ladder bench`, the figures about the models: tokens/s through the engine against a bare
llama-cpp-python loop (and llama-bench), the whole ladder's turn against one model after
another, the KV cache at turn 10 against turn 1, and each worker's memory."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tui import store
from tui.cards import ModelCard
from tui.engine.base import Backend
from tui.engine.events import Finished, SamplingParams, TurnRequest
from tui.engine.local import Engine
from tui.engine.memory import resident
from tui.engine.schedule import AUTO, available_cores, prefill_priority
from tui.engine.worker import WORKER_NICE

PROMPT = "What movie do these emoji describe? 🐠🐟🐡🌊 Explain your answer in detail."


def greedy(tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=tokens, seed=1, repeat_penalty=1.0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- 1. throughput: engine vs bare loop vs llama-bench -----------------------------------------


def bare_loop(card: ModelCard, path: str, text: str, threads: int, tokens: int) -> dict[str, float]:
    """llama-cpp-python on its own: load, format the same prompt, generate greedily."""
    import llama_cpp

    from tui.engine.prompt import formatter_for
    from tui.engine.worker import llama_options

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # llama.cpp's notes would garble the report
    os.setpriority(os.PRIO_PROCESS, 0, WORKER_NICE)  # as the engine's workers run: the same footing
    llm = llama_cpp.Llama(path, **llama_options(card, threads))
    prompt = formatter_for(card, llm)(user(text))
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
    return {
        "tokens": count,
        "tokens_per_s": (count - 1) / (last - first) if count > 1 else 0.0,
        "ttft_s": first - start,
    }


def llama_bench(binary: Path, path: Path, threads: int, tokens: int) -> float | None:
    try:
        result = subprocess.run(
            # At the engine's workers' priority, so that the same else on the machine slows both alike.
            ["nice", "-n", str(WORKER_NICE), str(binary), "-m", str(path), "-t", str(threads)]
            + ["-p", "0", "-n", str(tokens), "-r", "1", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        rows = json.loads(result.stdout)
        return float(rows[0]["avg_ts"])
    except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired):
        return None


async def solo_turn(card: ModelCard, text: str, tokens: int, policy: str = "mixed") -> Finished:
    engine = Engine(policy=policy)
    model = engine.model(card)
    try:
        await model.load()
        return await last_event(model, TurnRequest(user(text), greedy(tokens)))
    finally:
        await engine.close()


async def last_event(model: Backend, request: TurnRequest) -> Finished:
    """Runs a turn to its end: its last event, which says how it went."""
    events = [event async for event in model.turn(request)]
    assert isinstance(events[-1], Finished)
    return events[-1]


async def throughput(
    cards: list[ModelCard], tokens: int, llama_bench_binary: Path | None, repeats: int
) -> list[dict[str, Any]]:
    """Medians of `repeats` rounds, each running the bare loop, the engine and llama-bench in turn:
    this machine's speed drifts by a quarter between minutes, and then drifts for all three alike."""
    cores = available_cores()
    rows = []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        for card in cards:
            path = store.ensure_file(card)
            bare_rates, engine_rates, reference_rates = [], [], []
            for _ in range(repeats):
                bare = await asyncio.get_running_loop().run_in_executor(
                    pool, bare_loop, card, str(path), PROMPT, cores, tokens
                )
                done = await solo_turn(card, PROMPT, tokens)
                bare_rates.append(bare["tokens_per_s"])
                engine_rates.append(done.tokens_per_s or 0.0)
                if llama_bench_binary:
                    reference_rates.append(llama_bench(llama_bench_binary, path, cores, tokens) or 0.0)
            engine, bare_rate = statistics.median(engine_rates), statistics.median(bare_rates)
            row: dict[str, Any] = {
                "model": card.id,
                "threads": cores,
                "tokens": done.completion_tokens,
                "engine_tokens_per_s": engine,
                "bare_tokens_per_s": bare_rate,
                "ratio": engine / bare_rate if bare_rate else None,
                "engine_by_round": engine_rates,
            }
            reference = statistics.median(reference_rates) if reference_rates and all(reference_rates) else None
            if llama_bench_binary:
                row["llama_bench_tokens_per_s"] = reference
                row["llama_bench_by_round"] = reference_rates
                if reference:
                    row["ratio_to_llama_bench"] = engine / reference
            rows.append(row)
    return rows


# --- 2. the whole ladder: a schedule vs one model after another --------------------------------


async def ladder_turn(cards: list[ModelCard], tokens: int, policy: str) -> dict[str, Any]:
    engine = Engine(policy=policy)
    models = [engine.model(card) for card in cards]
    try:
        await asyncio.gather(*(model.load() for model in models))
        parts = {model.card.id: model.memory for model in models}
        start = time.perf_counter()

        finished = await asyncio.gather(
            *(last_event(model, TurnRequest(user(PROMPT), greedy(tokens))) for model in models)
        )
        wall = time.perf_counter() - start
        choice = engine.choice  # the turn's, chosen as it started
        memory_after = {model.card.id: resident(model.pid or 0) for model in models}
    finally:
        await engine.close()
    return {
        "wall_s": wall,
        "ttft_s": {m.card.id: f.ttft_s for m, f in zip(models, finished, strict=True)},
        "tokens": {m.card.id: f.completion_tokens for m, f in zip(models, finished, strict=True)},
        "chosen": choice.policy.name,
        "note": choice.note,
        "memory_loaded": parts,
        "memory_after_turn": memory_after,
    }


def ttft_bounds(cards: list[ModelCard], solo_ttft: dict[str, float], prompt_tokens: dict[str, int]) -> dict[str, float]:
    """Each model's earliest possible first token in a turn of all: its prompt and those served
    before it (least work first, as `prefill_priority` orders them), each taking its solo time on
    every core, one after another."""
    served = sorted(cards, key=lambda card: prefill_priority(card.params or 0, prompt_tokens[card.id]))
    bounds, elapsed = {}, 0.0
    for card in served:
        elapsed += solo_ttft[card.id]
        bounds[card.id] = elapsed
    return bounds


def schedule_order(policies: list[str]) -> list[str]:
    """The schedules to measure, `auto` last in each round: it learns from the others' turns."""
    return sorted(set(policies), key=lambda policy: (policy == AUTO, policy))


async def whole_ladder(cards: list[ModelCard], tokens: int, policies: list[str], repeats: int) -> dict[str, Any]:
    """Medians over `repeats` rounds, each round measuring the baseline and every schedule
    in turn: the machine's noise (often ±15% between minutes) then hits all alike."""
    policies = schedule_order(policies)
    rounds: list[dict[str, Any]] = []
    for _ in range(repeats):
        solo = {card.id: await solo_turn(card, PROMPT, tokens) for card in cards}
        runs = {policy: await ladder_turn(cards, tokens, policy) for policy in policies}
        rounds.append({"solo": solo, "runs": runs})
    median = statistics.median
    sequential = median(sum(d.elapsed_s for d in r["solo"].values()) for r in rounds)
    solo_ttft = {card.id: median(r["solo"][card.id].ttft_s or 0 for r in rounds) for card in cards}
    bounds = ttft_bounds(cards, solo_ttft, {c.id: rounds[-1]["solo"][c.id].prompt_tokens for c in cards})
    result: dict[str, Any] = {
        "repeats": repeats,
        "sequential_s": sequential,
        "solo_ttft_s": solo_ttft,
        "ttft_bound_s": bounds,
        "solo_tokens": {c.id: rounds[-1]["solo"][c.id].completion_tokens for c in cards},
        "policies": {},
    }
    for policy in policies:
        run = dict(rounds[-1]["runs"][policy])
        run["wall_s"] = median(r["runs"][policy]["wall_s"] for r in rounds)
        run["ttft_s"] = {c.id: median(r["runs"][policy]["ttft_s"][c.id] or 0 for r in rounds) for c in cards}
        run["ratio"] = run["wall_s"] / sequential
        run["ratios_by_round"] = [
            r["runs"][policy]["wall_s"] / sum(d.elapsed_s for d in r["solo"].values()) for r in rounds
        ]
        run["ttft_ratio"] = {k: v / (solo_ttft[k] or 1e-9) for k, v in run["ttft_s"].items()}
        run["ttft_bound_ratio"] = {k: v / (bounds[k] or 1e-9) for k, v in run["ttft_s"].items()}
        run["worst_ttft_bound_ratio"] = max(run["ttft_bound_ratio"].values())
        run["chosen_by_round"] = [r["runs"][policy]["chosen"] for r in rounds]
        result["policies"][policy] = run
    return result


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
            done = await last_event(model, TurnRequest(list(history), greedy(24)))
            history.append({"role": "assistant", "content": done.text})
            ttfts.append(done.ttft_s or 0.0)
            evaluated.append(done.prompt_tokens - done.cached_tokens)
    finally:
        await engine.close()
    return {
        "model": card.id,
        "ttft_turn1_s": ttfts[0],
        f"ttft_turn{turns}_s": ttfts[-1],
        "ratio": ttfts[-1] / ttfts[0] if ttfts[0] else None,
        "evaluated_tokens": evaluated,
        "prompt_tokens_last": done.prompt_tokens,
    }
