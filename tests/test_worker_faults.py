"""Faults a worker must survive, against real llama.cpp and the real SmolLM2-135M model: Ctrl+C,
chat templates that loop or fail, a fault while holding a lane, and being closed while busy."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

from tui import store
from tui.cards import ModelCard, load_catalog
from tui.engine import worker as worker_module
from tui.engine.events import Finished, SamplingParams, TextPiece, TurnRequest
from tui.engine.fitting import RENDER_LIMIT, RenderStopped
from tui.engine.local import Engine, LocalModel
from tui.engine.prompt import PromptFormatError, make_formatter
from tui.engine.worker import Worker

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0, max_tokens=16, seed=1)
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# ChatML, as SmolLM2 expects, with a fault that the last message's text switches on.
FAULTY_TEMPLATE = (
    "{% set last = messages[-1]['content'] %}"
    "{% if last == 'loop' %}" + LOOPS + "{% endif %}"
    "{% if last == 'undefined' %}{{ nothing.here }}{% endif %}"
    "{% if last == 'type' %}{{ 1 + 'a' }}{% endif %}"
    "{% if last == 'unsafe' %}{{ ''.__class__.__mro__ }}{% endif %}"
    "{% if last == 'refuse' %}{{ raise_exception('roles must alternate') }}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)


@pytest.fixture
def smol() -> ModelCard:
    return load_catalog().cards["smollm2-135m-instruct"]


@pytest.fixture
def faulty(smol: ModelCard) -> ModelCard:
    return replace(smol, id="smollm2-faulty-template", chat_format="template", chat_template=FAULTY_TEMPLATE)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def collect(model: LocalModel, request: TurnRequest) -> list[Any]:
    return [event async for event in model.turn(request)]


async def loaded(engine: Engine, card: ModelCard) -> LocalModel:
    model = engine.model(card)
    await model.load()
    return model


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- Ctrl+C -----------------------------------------------------------------------------------


async def test_a_worker_ignores_sigint_from_its_start_and_still_answers(smol: ModelCard) -> None:
    """Ctrl+C reaches every process of the terminal's group: a worker that gets SIGINT while it
    starts (imports, loads) or while it answers carries on, and leaves no traceback in its log."""
    engine = Engine()
    try:
        model = engine.model(replace(smol, id="smollm2-sigint"))
        loading = asyncio.create_task(model.load())
        await eventually(
            lambda: model._process is not None and model._process.pid is not None, what="the worker process to start"
        )
        while not loading.done():  # Ctrl+C again and again, until the worker is ready
            os.kill(model._process.pid, signal.SIGINT)
            await asyncio.sleep(0.01)
        await loading
        events = []
        async for event in model.turn(TurnRequest(user("Name three colours."), GREEDY)):
            events.append(event)
            if isinstance(event, TextPiece):
                os.kill(model.pid, signal.SIGINT)
        assert events[-1].status == "done" and events[-1].text
        assert (await collect(model, TurnRequest(user("Hi"), GREEDY)))[-1].status == "done"
        assert model._process.is_alive() and "KeyboardInterrupt" not in model._log.read_text()
    finally:
        await engine.close()


# --- chat templates that loop or fail ---------------------------------------------------------


async def test_cancel_stops_a_looping_template_and_the_worker_answers_next(faulty: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, faulty)
        before = cpu_seconds(model.pid)
        turn = asyncio.create_task(collect(model, TurnRequest(user("loop"), GREEDY)))
        await eventually(lambda: cpu_seconds(model.pid) > before + 0.3, what="the template to be rendering")
        cancelled_at = time.monotonic()
        await model.cancel()
        done = (await asyncio.wait_for(turn, RENDER_LIMIT))[-1]
        assert time.monotonic() - cancelled_at < 1.0
        assert isinstance(done, Finished) and done.status == "cancelled" and done.finish_reason == "cancelled"
        after = (await collect(model, TurnRequest(user("Hi"), GREEDY)))[-1]
        assert after.status == "done" and after.text
    finally:
        await engine.close()


async def test_a_looping_template_is_stopped_at_the_time_limit_with_an_error(faulty: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, faulty)
        started = time.monotonic()
        done = (await asyncio.wait_for(collect(model, TurnRequest(user("loop"), GREEDY)), RENDER_LIMIT + 10))[-1]
        assert time.monotonic() - started >= RENDER_LIMIT
        assert done.status == "error" and f"more than {RENDER_LIMIT:g} s" in done.error
        assert "chat_template" in done.error
        after = (await collect(model, TurnRequest(user("Hi"), GREEDY)))[-1]
        assert after.status == "done" and after.text
    finally:
        await engine.close()


async def test_any_template_error_fails_only_that_reply(faulty: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, faulty)
        pid = model.pid
        for trigger, kind in (("undefined", "UndefinedError"), ("type", "TypeError"), ("unsafe", "SecurityError")):
            done = (await collect(model, TurnRequest(user(trigger), GREEDY)))[-1]
            assert done.status == "error" and f"the chat template failed ({kind}:" in done.error, trigger
            assert "chat_format such as chatml" in done.error
        refused = (await collect(model, TurnRequest(user("refuse"), GREEDY)))[-1]
        assert (
            refused.status == "error"
            and refused.error == "the chat template refused this conversation: roles must alternate"
        )
        after = (await collect(model, TurnRequest(user("Hi"), GREEDY)))[-1]
        assert after.status == "done" and after.text
        assert model.state == "ready" and model.pid == pid
    finally:
        await engine.close()


def test_a_template_that_is_not_jinja_is_a_clear_load_error(faulty: ModelCard) -> None:
    with pytest.raises(PromptFormatError, match="the card's chat_template is not a valid Jinja template"):
        make_formatter(replace(faulty, chat_template="{% for %}"), None, bos_token="", eos_token="")


# --- a fault inside a lane --------------------------------------------------------------------


def serve_with_a_fault(*args: Any) -> None:
    """worker.serve, but the first decode step fails while it holds its lane (run in the worker)."""
    use_threads = Worker.use_threads
    failed: list[bool] = []

    def fail_once(self: Worker, threads: int) -> None:
        if not failed:
            failed.append(True)
            raise OSError("injected fault")
        use_threads(self, threads)

    Worker.use_threads = fail_once  # type: ignore[method-assign]
    worker_module.serve(*args)


async def test_a_fault_while_holding_a_lane_fails_the_reply_and_hands_the_lane_on(
    smol: ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine()
    try:
        monkeypatch.setattr("tui.engine.local.worker.serve", serve_with_a_fault)
        model = await loaded(engine, replace(smol, id="smollm2-fault"))
        failed = (await collect(model, TurnRequest(user("Hi"), GREEDY)))[-1]
        assert failed.status == "error" and "OSError: injected fault" in failed.error
        # The next turn needs the lane again: it would wait for ever if the failed step had kept it.
        # The bound only turns such a hang into a clear failure: on a loaded machine 30 s was too short.
        after = (await asyncio.wait_for(collect(model, TurnRequest(user("Hi"), GREEDY)), 240))[-1]
        assert after.status == "done" and after.text and model.state == "ready"
    finally:
        await engine.close()


# --- closing a busy model ---------------------------------------------------------------------


async def test_closing_a_busy_model_cancels_its_turn_and_the_worker_exits_cleanly(smol: ModelCard) -> None:
    engine = Engine()
    try:
        model = await loaded(engine, smol)
        stream = model.turn(
            TurnRequest(
                user("Write a very long essay about rivers."), SamplingParams(temperature=0.0, max_tokens=2000, seed=1)
            )
        )
        async for event in stream:
            if isinstance(event, TextPiece):
                break
        process = model._process
        started = time.monotonic()
        await model.close()
        # It stopped by itself, its turn cancelled, instead of decoding on until killed after the grace time.
        assert process.exitcode == 0
        assert time.monotonic() - started < 2.0
        assert model.state == "closed" and model not in engine.models
        await stream.aclose()
    finally:
        await engine.close()


# --- fitting a long history into the context (in this process) --------------------------------


@pytest.fixture
def small_worker(smol: ModelCard) -> Iterator[Worker]:
    """A real worker object in this process, with a 256-token context."""
    engine = Engine(cores=1)
    receive, send = multiprocessing.Pipe(duplex=False)
    card = replace(smol, context=256)
    yield Worker(card, str(store.ensure_file(card)), send, engine.lanes, slot=0, threads=1)
    receive.close()
    send.close()


def long_history(pairs: int) -> list[dict[str, str]]:
    history: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(pairs):
        history += [*user(f"Remember the number {i}, please."), {"role": "assistant", "content": "I will."}]
    return [*history, *user("Which numbers did I ask you to remember?")]


def test_fit_renders_a_long_history_a_few_times_and_drops_no_more_than_needed(small_worker: Worker) -> None:
    render = small_worker.prompts.formatter
    calls: list[int] = []
    small_worker.prompts.formatter = lambda messages: calls.append(len(messages)) or render(messages)
    history = long_history(40)
    tokens, _, notices = small_worker.prompts.fit(history, reserve=16)
    assert len(tokens) + 16 <= 256
    dropped = int(re.search(r"left out the (\d+) earliest", notices[0]).group(1))
    assert dropped >= 10  # enough turns dropped that once per turn would be many renders
    assert len(calls) <= 2 + math.ceil(math.log2(40))
    one_fewer = render([history[0], *history[1 + 2 * (dropped - 1) :]])
    assert len(small_worker.llm.tokenize(one_fewer.text.encode(), add_bos=False, special=True)) + 16 > 256


def test_fit_stops_between_renders_once_the_turn_is_cancelled(small_worker: Worker) -> None:
    render = small_worker.prompts.formatter
    calls: list[int] = []

    def cancelled_while_rendering(messages: list[dict[str, str]]) -> Any:
        calls.append(len(messages))
        small_worker.cancel.set()  # as the reader thread does when the app's cancel arrives
        return render(messages)

    small_worker.prompts.formatter = cancelled_while_rendering
    with pytest.raises(RenderStopped) as stopped:
        small_worker.prompts.fit(long_history(40), reserve=16)
    assert stopped.value.cancelled and len(calls) == 1
