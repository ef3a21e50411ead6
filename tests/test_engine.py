"""The engine against real llama.cpp and the real SmolLM2-135M model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from waiting import eventually

from tui import store
from tui.cards import ModelCard, load_catalog
from tui.engine.base import ModelLoadError
from tui.engine.events import Finished, FirstToken, Notice, PromptReady, SamplingParams, TextPiece, TurnRequest
from tui.engine.local import Engine, LocalModel
from tui.sources import Source

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, seed=1)


@pytest.fixture
def smol() -> ModelCard:
    return load_catalog().cards["smollm2-135m-instruct"]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def collect(model: LocalModel, request: TurnRequest) -> list[object]:
    return [event async for event in model.turn(request)]


async def collect_rest(stream: AsyncIterator[object]) -> list[object]:
    return [event async for event in stream]


async def loaded(engine: Engine, card: ModelCard) -> LocalModel:
    model = engine.model(card)
    await model.load()
    return model


async def test_a_turn_streams_events_in_order(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        events = await collect(model, TurnRequest(user("Name three colours."), GREEDY))
        assert isinstance(events[0], PromptReady) and events[0].prompt_tokens > 5
        assert isinstance(events[1], FirstToken) and events[1].ttft_s > 0
        pieces = [e.text for e in events if isinstance(e, TextPiece)]
        done = events[-1]
        assert isinstance(done, Finished) and done.status == "done"
        assert done.text == "".join(pieces).strip() and done.text
        # Text comes in batches; each says how many tokens it holds.
        assert 0 < sum(e.tokens for e in events if isinstance(e, TextPiece)) <= done.completion_tokens
        assert done.completion_tokens == 24 or done.finish_reason == "stop"
        assert done.tokens_per_s and done.tokens_per_s > 0
        assert model.state == "ready" and model.n_past == done.prompt_tokens + done.completion_tokens
    finally:
        await engine.close()


async def test_same_seed_same_reply_and_seed_matters(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        params = SamplingParams(temperature=1.0, max_tokens=32, seed=42)
        replies = []
        for seed in (42, 42, 7):
            await model.reset()
            events = await collect(
                model, TurnRequest(user("Tell me a story about a cat."), params.with_changes({"seed": seed}))
            )
            replies.append(events[-1].text)
        assert replies[0] == replies[1]
        assert replies[0] != replies[2]
    finally:
        await engine.close()


async def test_second_turn_evaluates_only_new_tokens(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        history = user("My name is Ada. Say hello.")
        first = (await collect(model, TurnRequest(history, GREEDY)))[-1]
        history += [{"role": "assistant", "content": first.text}, *user("What is my name?")]
        second = (await collect(model, TurnRequest(history, GREEDY)))[-1]
        # Everything up to the first reply is reused; only the new user turn (and the
        # few tokens the chat template adds around it) is evaluated.
        assert second.cached_tokens >= first.prompt_tokens + first.completion_tokens - 2
        assert second.prompt_tokens - second.cached_tokens < 20
    finally:
        await engine.close()


async def test_cancel_during_generation_stops_quickly(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        request = TurnRequest(
            user("Write a very long essay about rivers."), SamplingParams(temperature=0.0, max_tokens=2000, seed=1)
        )
        stream = model.turn(request)
        pieces = 0
        async for event in stream:
            pieces += isinstance(event, TextPiece)
            if pieces == 5:
                break
        cancelled_at = time.perf_counter()
        await model.cancel()
        rest = [event async for event in stream]
        stopped = time.perf_counter() - cancelled_at
        done = rest[-1]
        assert isinstance(done, Finished) and done.status == "cancelled"
        assert stopped < 0.5
        assert 0 < done.completion_tokens < 2000 and done.text
        # The model is usable again straight away.
        after = await collect(model, TurnRequest(user("Hi"), GREEDY))
        assert after[-1].status == "done"
    finally:
        await engine.close()


async def test_cancel_during_prompt_processing_stops_quickly(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        long_prompt = "Summarise this. " + " ".join(f"Sentence number {i} is about apples." for i in range(350))
        stream = model.turn(TurnRequest(user(long_prompt), GREEDY))
        first = await stream.__anext__()
        assert isinstance(first, PromptReady) and first.prompt_tokens > 3000
        # The prompt step holds cores for the several seconds it takes (the lanes' state is
        # read only to know the worker is inside it).
        await eventually(lambda: engine.lanes._holding[model._slot] > 0, what="the prompt step to start")
        cancelled_at = time.perf_counter()
        await model.cancel()
        rest = [event async for event in stream]
        assert time.perf_counter() - cancelled_at < 0.5
        assert isinstance(rest[-1], Finished) and rest[-1].status == "cancelled"
        assert rest[-1].completion_tokens == 0
        after = await collect(model, TurnRequest(user("Hi"), GREEDY))
        assert after[-1].status == "done" and after[-1].text
    finally:
        await engine.close()


async def test_killing_one_worker_leaves_the_other_answering(smol: ModelCard) -> None:
    engine = Engine()
    twin = replace(smol, id="smollm2-twin", name="SmolLM2 twin")
    try:
        victim, survivor = await loaded(engine, smol), await loaded(engine, twin)
        request = TurnRequest(
            user("Write a long poem about the sea."), SamplingParams(temperature=0.0, max_tokens=64, seed=1)
        )
        victim_stream, survivor_task = victim.turn(request), asyncio.create_task(collect(survivor, request))
        streamed = []
        async for event in victim_stream:
            if isinstance(event, TextPiece):
                streamed.append(event)
                break
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        rest = [event async for event in victim_stream]
        streamed += [event for event in rest if isinstance(event, TextPiece)]
        failed = rest[-1]
        assert isinstance(failed, Finished) and failed.status == "error"
        assert "SIGKILL" in (failed.error or "") and "other models are unaffected" in (failed.error or "")
        # The reply keeps what was streamed before the kill: its text and the tokens it holds.
        assert failed.text == "".join(piece.text for piece in streamed).strip() and failed.text
        assert failed.completion_tokens == sum(piece.tokens for piece in streamed) > 0
        assert victim.state == "error"
        survived = (await survivor_task)[-1]
        assert survived.status == "done" and survived.completion_tokens == 64
        # A later turn to the dead model reports its error instead of hanging.
        again = await collect(victim, request)
        assert again[-1].status == "error" and "SIGKILL" in again[-1].error
    finally:
        await engine.close()


async def test_a_bad_file_fails_only_that_model(smol: ModelCard, tmp_path: Path) -> None:
    bad_file = tmp_path / "broken.gguf"
    bad_file.write_bytes(b"GGUF" + os.urandom(4096))
    broken = replace(smol, id="broken", size=None, sha256=None, sources=(Source(path=str(bad_file)),))
    engine = Engine()
    try:
        good = await loaded(engine, smol)
        broken_model = engine.model(broken)
        with pytest.raises(ModelLoadError, match="could not load"):
            await broken_model.load()
        # The worker exits after saying why; its exit does not replace the reason with "exit code 0".
        await eventually(lambda: broken_model._slot is None, what="the exit to be handled: its slot given back")
        assert broken_model.state == "error" and broken_model.error.startswith("could not load")
        events = await collect(good, TurnRequest(user("Hi"), GREEDY))
        assert events[-1].status == "done"
    finally:
        await engine.close()


async def test_a_file_with_another_sha256_fails_to_load_before_its_worker_starts(smol: ModelCard) -> None:
    """A card's sha256 is checked at load for a `path:` file too (and a wrong one names both hashes)."""
    path = store.ensure_file(smol)
    wrong = replace(smol, id="smollm2-wrong-hash", sha256="0" * 64, sources=(Source(path=str(path)),))
    engine = Engine()
    try:
        model = engine.model(wrong)
        with pytest.raises(ModelLoadError) as caught:
            await model.load()
        message = str(caught.value)
        assert str(path) in message and "0" * 64 in message and smol.sha256 in message
        assert "ladder models verify smollm2-wrong-hash" in message
        assert model.state == "error" and model.pid is None and model._process is None  # no worker was started
    finally:
        await engine.close()


async def test_a_worker_killed_by_an_unnamed_signal_is_reported(smol: ModelCard) -> None:
    """A real-time signal has no name: the reply says "signal N" and the exit is handled as any other."""
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        stream = model.turn(
            TurnRequest(
                user("Write a long poem about the sea."), SamplingParams(temperature=0.0, max_tokens=500, seed=1)
            )
        )
        async for event in stream:
            if isinstance(event, TextPiece):
                break
        unnamed = signal.SIGRTMIN + 6
        os.kill(model.pid, unnamed)
        failed = (await asyncio.wait_for(collect_rest(stream), 10))[-1]
        assert isinstance(failed, Finished) and failed.status == "error"
        assert f"killed (signal {unnamed})" in failed.error
        assert model.state == "error" and f"signal {unnamed}" in model.error
    finally:
        await engine.close()


async def test_history_longer_than_the_context_is_trimmed_with_a_notice(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, replace(smol, context=256))
        history: list[dict[str, str]] = []
        for i in range(6):
            history += user(f"Remember the number {i}. " + "Please keep it in mind. " * 6)
            history.append({"role": "assistant", "content": "I will remember it. " * 5})
        history += user("Which numbers did I ask you to remember?")
        events = await collect(model, TurnRequest(history, SamplingParams(temperature=0.0, max_tokens=16, seed=1)))
        notices = [e.message for e in events if isinstance(e, Notice)]
        assert notices and "left out" in notices[0]
        assert events[-1].status == "done" and events[-1].notices == notices

        too_long = user("word " * 400)
        failed = (await collect(model, TurnRequest(too_long, GREEDY)))[-1]
        assert failed.status == "error" and "context is 256" in failed.error
        assert (await collect(model, TurnRequest(user("Hi"), GREEDY)))[-1].status == "done"
    finally:
        await engine.close()


async def test_generation_stops_when_the_context_is_full(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, replace(smol, context=256))
        done = (
            await collect(
                model,
                TurnRequest(
                    user("Write a very long essay about rivers."),
                    SamplingParams(temperature=0.0, max_tokens=1000, seed=1),
                ),
            )
        )[-1]
        assert done.status == "done" and done.finish_reason == "context"
        assert done.prompt_tokens + done.completion_tokens >= 250
    finally:
        await engine.close()
