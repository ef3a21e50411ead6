"""Remote models in the completion form (tui/engine/remote.py, remote_score.py): turns streamed from
`/v1/completions`, and continuations scored from the server's echo of prompt + continuation with log-probs. Real
servers on loopback (llama-cpp-python's own, on SmolLM2-135M and on Gemma 3 270M) and the scripted server for what
real ones rarely do."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from servers import MODEL_ALIAS, Connect, LlamaServer, ScriptedServer, error, text_completion
from waiting import eventually

from tui.cards import ModelCard, load_catalog
from tui.engine.endpoints import card_for
from tui.engine.events import Finished, FirstToken, SamplingParams, Scores, TextPiece, TurnEvent, TurnRequest
from tui.engine.remote import RemoteModel
from tui.engine.remote_score import ALIGNMENT_PROMPT
from tui.store import ensure_file

KEY_ENV = "LADDER_TEST_REMOTE_KEY"
KEY = "sk-secret-123"
TIMEOUT = 30.0  # seconds a turn or scoring against the SmolLM2 server may take before the test fails
FEW_SHOT = (
    "Q: What is the capital of France?\nA: Paris\n\n"
    "Q: What is the capital of Germany?\nA: Berlin\n\n"
    "Q: What is the capital of Italy?\nA:"
)
STOPS = ("\nQ:", "\n\n")  # the lab's few-shot stop strings
# A multiple-choice item for Gemma 3 270M, whose options' log-probs lie nats apart (A -1.9, B -4.1, C -5.7),
# and a continuation of several tokens. Short: llama-cpp-python's server sorts the vocabulary (262k entries for
# Gemma) at every echoed position, ~0.5 s each here.
CHOICE_PROMPT = "Fruit? A) rock B) apple C) sky\nA:"
CHOICE_CONTINUATIONS = [" A", " B", " C", " B) apple"]

pytestmark = pytest.mark.usefixtures("short_back_off")


def card(url: str, model: str = "tiny", api_key_env: str | None = None) -> ModelCard:
    return card_for(url, {"id": model}, api_key_env)


def host(url: str) -> str:
    return urlsplit(url).netloc


def few_shot(text: str = FEW_SHOT, max_tokens: int = 24, stop: tuple[str, ...] = STOPS) -> TurnRequest:
    return TurnRequest([], SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=1), completion=text, stop=stop)


async def collect(model: RemoteModel, request: TurnRequest) -> list[TurnEvent]:
    async def events() -> list[TurnEvent]:
        return [event async for event in model.turn(request)]

    return await asyncio.wait_for(events(), TIMEOUT)


async def score(model: RemoteModel, request: TurnRequest, continuations: list[str]) -> Scores:
    return await asyncio.wait_for(model.score(request, continuations), TIMEOUT)


def echoed(tokens: list[tuple[str, float | None]]) -> dict[str, Any]:
    """The `logprobs` of an echoed text_completion: each token with its offset in the text, as servers give it."""
    offsets = [sum(len(text) for text, _ in tokens[:index]) for index in range(len(tokens))]
    return {
        "tokens": [text for text, _ in tokens],
        "text_offset": offsets,
        "token_logprobs": [value for _, value in tokens],
        "top_logprobs": [None if value is None else {text: value} for text, value in tokens],
    }


def words(text: str) -> list[str]:
    """A text split as a tokenizer might: each word with its leading space."""
    return re.findall(r"\s*\S+", text)


def alignment_replies(generated: float = -1.5, echoed_as: float = -1.5) -> list[Any]:
    """The two answers to the check scoring begins with: " Paris" generated after ALIGNMENT_PROMPT with the
    log-prob `generated`, then echoed after it with `echoed_as` (the same on a server whose log-probs line up)."""
    generation = {"tokens": [" Paris"], "text_offset": [len(ALIGNMENT_PROMPT)], "token_logprobs": [generated]}
    prompt = [(word, -2.0) for word in words(ALIGNMENT_PROMPT)]
    prompt[0] = (prompt[0][0], None)
    echo = echoed([*prompt, (" Paris", echoed_as), (".", -0.3)])
    return [text_completion(" Paris", generation), text_completion(f"{ALIGNMENT_PROMPT} Paris.", echo)]


# --- the completion form's turn -------------------------------------------------------------------------


async def test_a_completion_form_turn_posts_the_text_and_stop_strings_to_v1_completions(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    model = await connect(card(scripted_server.url))
    events = await collect(model, few_shot(max_tokens=7))
    done = events[-1]
    assert isinstance(done, Finished) and (done.status, done.text) == ("done", "Hello there")
    assert [event.text for event in events if isinstance(event, TextPiece)] == ["Hello", " there"]
    assert scripted_server.chat_requests == []
    body = scripted_server.completion_requests[0].body
    assert (body["model"], body["prompt"], body["stop"], body["stream"]) == ("tiny", FEW_SHOT, list(STOPS), True)
    assert (body["temperature"], body["max_tokens"], body["seed"], body["top_k"]) == (0.0, 7, 1, 40)
    assert "messages" not in body and "echo" not in body


@pytest.mark.model
async def test_a_completion_form_turn_against_llama_server_streams_the_answer_and_stops_at_a_stop_string(
    llama_server: LlamaServer, connect: Connect
) -> None:
    model = await connect(card(llama_server.url, MODEL_ALIAS))
    unstopped = await collect(model, few_shot(max_tokens=16, stop=()))
    events = await collect(model, few_shot(max_tokens=16))
    done, other = events[-1], unstopped[-1]
    assert isinstance(done, Finished) and isinstance(other, Finished)
    # Greedy, the same reply: without the stop strings it runs on past "\n\n" to the token limit ...
    assert other.finish_reason == "length" and "\n\n" in other.text, other.text
    # ... and with them it is streamed up to the first one and stops there.
    assert isinstance(events[0], FirstToken) and any(isinstance(event, TextPiece) for event in events)
    assert (done.status, done.finish_reason) == ("done", "stop")
    assert done.text and done.text == other.text.split("\n\n")[0].strip()
    assert done.completion_tokens < 16


# --- scoring against real servers ------------------------------------------------------------------------


@pytest.mark.model
async def test_scoring_on_llama_cpp_server_with_smollm2_is_unavailable_as_its_prompt_logprobs_are_one_token_late(
    llama_server: LlamaServer, connect: Connect
) -> None:
    # llama-cpp-python 0.3.x pairs each echoed token with the logits computed *at* it (the next position's
    # distribution) when the model adds no BOS token, as SmolLM2 does not: its numbers cannot be used.
    model = await connect(card(llama_server.url, MODEL_ALIAS))
    scores = await score(model, few_shot(), [" Rome", " Paris"])
    assert scores.status == "unavailable" and scores.logprobs == []
    assert f"{host(llama_server.url)} echoes each prompt token with the log-probability of the position after it" in (
        scores.error or ""
    )
    assert model.state == "ready"


@pytest.fixture(scope="module")
def gemma_path(shared_cache: Path) -> Path:
    """Gemma 3 270M's file, assembled from its packages into the test run's cache. Gemma adds a BOS token, so
    llama-cpp-python's server echoes its prompt log-probs in the right places."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(shared_cache))
        return ensure_file(load_catalog().cards["gemma-3-270m"])


@pytest.fixture(scope="module")
def gemma_scores(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Scores, list[list[float]]]:
    """CHOICE_CONTINUATIONS scored by llama-cpp-python's server on Gemma, and directly in this process."""

    async def remotely(url: str) -> Scores:
        model = RemoteModel(card(url, "gemma"))
        await model.load()
        try:
            return await asyncio.wait_for(model.score(few_shot(CHOICE_PROMPT), CHOICE_CONTINUATIONS), 300)
        finally:
            await model.close()

    with LlamaServer(tmp_path_factory.mktemp("gemma-server"), model=gemma_path, alias="gemma") as server:
        scores = asyncio.run(remotely(server.url))
    return scores, direct_logprobs(gemma_path, CHOICE_PROMPT, CHOICE_CONTINUATIONS)


def direct_logprobs(path: Path, prompt: str, continuations: list[str]) -> list[list[float]]:
    """Each continuation token's log-softmax at the position before it, from llama-cpp-python in this process,
    evaluated as the local engine does it and the server did it (its prompt cached from the request before): the
    prompt, then the continuation as a batch of its own. (One batch of both differs by up to 2e-2 on Gemma's
    later continuation tokens: llama.cpp's sums do not come out the same in batches of other sizes.)"""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=128, n_threads=1, flash_attn=True, verbose=False)
    try:
        prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True)
        found = []
        for continuation in continuations:
            tokens = llm.tokenize((prompt + continuation).encode(), add_bos=True)
            assert tokens[: len(prompt_tokens)] == prompt_tokens, "the continuation changes the prompt's tokens"
            llm.reset()
            llm.eval(prompt_tokens)
            llm.eval(tokens[len(prompt_tokens) :])
            logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
            logsoftmax = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
            found.append([float(logsoftmax[at - 1, tokens[at]]) for at in range(len(prompt_tokens), len(tokens))])
        return found
    finally:
        llm.close()


@pytest.mark.model
def test_remote_scores_on_gemma_equal_a_direct_llama_cpp_computation_within_a_hundredth(
    gemma_scores: tuple[Scores, list[list[float]]],
) -> None:
    scores, direct = gemma_scores
    assert scores.status == "done", scores.error
    assert [len(found) for found in scores.logprobs] == [len(found) for found in direct] == [1, 1, 1, 3]
    pairs = [pair for found in zip(scores.logprobs, direct, strict=True) for pair in zip(*found, strict=True)]
    differences = [abs(remote_value - direct_value) for remote_value, direct_value in pairs]
    print(f"remote {scores.logprobs}\ndirect {direct}\nlargest difference {max(differences):.2e}")
    assert max(differences) < 1e-2
    assert scores.prompt_tokens == 15  # BOS and the prompt's 14 tokens


@pytest.mark.model
def test_the_multiple_choice_ranking_from_the_server_equals_the_direct_one(
    gemma_scores: tuple[Scores, list[list[float]]],
) -> None:
    scores, direct = gemma_scores
    options = range(3)  # " A", " B", " C"

    def ranking(found: list[list[float]]) -> list[int]:
        return sorted(options, key=lambda option: -sum(found[option]))

    assert ranking(scores.logprobs) == ranking(direct) == [0, 1, 2]


# --- scoring: what the server sends, and what is taken from its answer --------------------------------------


async def test_scores_take_the_echoed_logprobs_of_the_tokens_from_the_prompts_end_and_check_alignment_once(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    prompt = "Q: 2+2?\nA:"
    echo = echoed(
        [("Q", None), (":", -1.0), (" 2+2?", -2.0), ("\n", -0.5), ("A", -0.2), (":", -0.1), (" 4", -0.7), ("\n", -0.9)]
    )
    generated_too = echoed([*[(word, -1.0) for word in words(prompt)], (" 4", -0.7), ("0", -4.0), ("\n", -0.2)])
    usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
    scripted_server.script(
        *alignment_replies(),
        text_completion(f"{prompt} 4\n", echo, usage=usage),
        text_completion(f"{prompt} 40\n", generated_too),
    )
    model = await connect(card(scripted_server.url))
    scores = await score(model, few_shot(prompt), [" 4", " 40"])
    assert scores.status == "done", scores.error
    assert scores.logprobs == [[-0.7], [-0.7, -4.0]]  # the first token's own, never the generated one after it
    assert scores.prompt_tokens == 7
    check, echo_check, *asked = [request.body for request in scripted_server.completion_requests]
    assert (check["prompt"], check["logprobs"], check["max_tokens"]) == (ALIGNMENT_PROMPT, 1, 1)
    assert "echo" not in check  # generated: the log-prob to hold the echoed one against
    assert echo_check["prompt"] == f"{ALIGNMENT_PROMPT} Paris"
    assert [body["prompt"] for body in asked] == [f"{prompt} 4", f"{prompt} 40"]
    assert all(
        (body["echo"], body["logprobs"], body["max_tokens"], body["temperature"]) == (True, 1, 1, 0.0) for body in asked
    )
    assert not any(body.get("stream") for body in asked)

    scripted_server.script(text_completion(f"{prompt} 4\n", echo))
    again = await score(model, few_shot(prompt), [" 4"])
    assert (again.status, again.logprobs) == ("done", [[-0.7]])
    assert len(scripted_server.completion_requests) == 5  # no second check
    assert model.state == "ready"


async def test_scoring_a_chat_request_is_unavailable_without_asking_the_server(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    model = await connect(card(scripted_server.url))
    chat = TurnRequest([{"role": "user", "content": "Name a fruit."}], SamplingParams(temperature=0.0))
    scores = await score(model, chat, [" apple"])
    assert scores.status == "unavailable"
    assert scores.error == (
        "scoring needs the few-shot form on a remote model: the server's chat template is not known here"
    )
    assert [request.path for request in scripted_server.requests] == ["/v1/models"]


async def test_a_server_echoing_only_the_generated_tokens_logprob_is_unavailable_naming_the_host_and_not_asked_again(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    # As llama.cpp's llama-server answers (ggml-org/llama.cpp#27174): the log-prob of the generated token only.
    generated_only = {"tokens": ["."], "text_offset": [len(ALIGNMENT_PROMPT) + 6], "token_logprobs": [-0.4]}
    scripted_server.script(alignment_replies()[0], text_completion(f"{ALIGNMENT_PROMPT} Paris.", generated_only))
    model = await connect(card(scripted_server.url))
    first, again = [await score(model, few_shot(), [" Rome"]) for _ in range(2)]
    unavailable = ("unavailable", f"{host(scripted_server.url)} returns no prompt log-probabilities")
    assert (first.status, first.error) == (again.status, again.error) == unavailable
    assert len(scripted_server.completion_requests) == 2  # the check's, once


async def test_a_server_returning_no_logprobs_at_all_is_unavailable_naming_the_host(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scores = await score(await connect(card(scripted_server.url)), few_shot(), [" Rome"])  # replies without any
    assert (scores.status, scores.error) == ("unavailable", f"{host(scripted_server.url)} returns no log-probabilities")


async def test_a_server_echoing_logprobs_one_token_late_is_unavailable_naming_the_host(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(*alignment_replies(generated=-1.5, echoed_as=-9.0))
    scores = await score(await connect(card(scripted_server.url)), few_shot(), [" Rome"])
    assert scores.status == "unavailable"
    assert f"{host(scripted_server.url)} echoes each prompt token with the log-probability" in (scores.error or "")
    assert len(scripted_server.completion_requests) == 2  # the check's two, none for the continuation


async def test_a_token_across_the_prompts_end_is_unavailable_rather_than_a_wrong_score(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    # The prompt ends in a space that the tokenizer joins to the continuation's first word: " Rome".
    joined = echoed([*[(word, -1.0) for word in words(FEW_SHOT)], (" Rome", -0.5)])
    scripted_server.script(*alignment_replies(), text_completion(f"{FEW_SHOT} Rome", joined))
    scores = await score(await connect(card(scripted_server.url)), few_shot(FEW_SHOT + " "), ["Rome"])
    assert scores.status == "unavailable"
    assert "reads the end of the prompt and the start of 'Rome' as one token" in (scores.error or "")


# --- scoring: failures, and cancel -------------------------------------------------------------------------


async def test_a_401_when_scoring_is_an_error_naming_the_variable_and_not_the_key(
    scripted_server: ScriptedServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    model = await connect(card(scripted_server.url, api_key_env=KEY_ENV))
    scripted_server.script(error(401, f"Incorrect API key provided: {KEY}"))
    scores = await score(model, few_shot(), [" Rome"])
    assert scores.status == "error"
    assert f"refused the key in {KEY_ENV}" in str(scores.error)
    assert "Incorrect API key provided: ***" in str(scores.error)
    assert KEY not in repr(scores)


async def test_a_404_when_scoring_is_an_error_naming_the_model(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    model = await connect(card(scripted_server.url))
    scripted_server.script(error(404, "model not found"))
    scores = await score(model, few_shot(), [" Rome"])
    assert scores.status == "error" and "has no model 'tiny'" in str(scores.error)


async def test_a_server_gone_when_scoring_is_an_error_saying_connection_refused(connect: Connect) -> None:
    with ScriptedServer() as server:
        model = await connect(card(server.url))
    scores = await score(model, few_shot(), [" Rome"])
    assert scores.status == "error" and "connection refused" in str(scores.error)
    assert model.state == "ready"


async def test_a_503_when_scoring_is_retried(scripted_server: ScriptedServer, connect: Connect) -> None:
    model = await connect(card(scripted_server.url))
    scripted_server.script(error(503, "loading model"), *alignment_replies())
    scripted_server.script(text_completion("", echoed([*[(word, -1.0) for word in words(FEW_SHOT)], (" Rome", -0.5)])))
    scores = await score(model, few_shot(), [" Rome"])
    assert (scores.status, scores.logprobs) == ("done", [[-0.5]])
    assert len(scripted_server.completion_requests) == 4


async def test_cancel_while_scoring_ends_it_cancelled_at_once_and_closes_the_request(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    model = await connect(card(scripted_server.url))
    slow = alignment_replies()[0]
    slow.delay = 10.0
    scripted_server.script(slow)
    scoring = asyncio.create_task(model.score(few_shot(), [" Rome"]))
    await eventually(lambda: scripted_server.completion_requests, what="the scoring request")
    assert model.state == "busy"
    cancelled_at = time.perf_counter()
    await model.cancel()
    scores = await asyncio.wait_for(scoring, 1)
    assert scores.status == "cancelled" and time.perf_counter() - cancelled_at < 0.5
    assert model.state == "ready"
    await eventually(lambda: scripted_server.disconnects == 1, timeout=5, what="the server to see the client leave")
