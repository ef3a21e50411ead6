"""The token loop on real llama.cpp: the same replies as llama-cpp-python's `Llama.generate` for the
same seed and parameters, a KV cache that is reused only where it holds the same tokens, and the
log-probabilities it reads in place."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from tui.cards import load_catalog
from tui.engine.decode import Sampler, TokenLoop
from tui.engine.events import SamplingParams
from tui.store import ensure_file

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    import llama_cpp

    card = load_catalog().cards["smollm2-135m-instruct"]
    model = llama_cpp.Llama(str(ensure_file(card)), n_ctx=1024, n_threads=2, use_mmap=False, verbose=False)
    yield model
    model.close()


def prompt(llm: Any, text: str) -> list[int]:
    chat = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return list(llm.tokenize(chat.encode(), add_bos=False, special=True))


def with_generate(llm: Any, tokens: list[int], params: SamplingParams, n: int) -> list[int]:
    """Today's way (before the token loop): llama-cpp-python's own generator."""
    llm.reset()
    llm.set_seed(params.seed)
    made = []
    for token in llm.generate(
        tokens,
        temp=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
        min_p=params.min_p,
        repeat_penalty=params.repeat_penalty,
    ):
        made.append(token)
        if len(made) == n or llm.token_eos() == token:
            break
    return made


def with_loop(loop: TokenLoop, tokens: list[int], params: SamplingParams, n: int) -> list[int]:
    sampler = Sampler(params, loop.n_vocab)
    try:
        cached = loop.keep_prefix(tokens)
        loop.evaluate(tokens[cached:])
        made = [sampler.sample(loop.ctx)]
        while len(made) < n and not loop.is_end(made[-1]):
            loop.step(made[-1])
            made.append(sampler.sample(loop.ctx))
        return made
    finally:
        sampler.close()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0, repeat_penalty=1.0, seed=1),
        SamplingParams(temperature=0.0, repeat_penalty=1.3, seed=1),
        SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, seed=7),
        SamplingParams(temperature=1.5, top_k=100, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=12345),
    ],
    ids=["greedy", "greedy-penalised", "sampled", "hot"],
)
def test_the_loop_gives_the_same_tokens_as_llama_generate_for_the_same_seed(llm: Any, params: SamplingParams) -> None:
    """Also greedy, which the loop decides itself (not through llama.cpp's chain): past the repeat
    penalty's 64-token window, so the window is the chain's too."""
    tokens = prompt(llm, "Write a long story, at least 300 words, about a robot who paints.")
    expected = with_generate(llm, tokens, params, 160)
    loop = TokenLoop(llm)
    loop.reset()
    assert with_loop(loop, tokens, params, 160) == expected
    assert len(expected) > 100


def test_a_cached_prefix_is_reused_and_gives_what_a_fresh_context_gives(llm: Any) -> None:
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.0)
    first = prompt(llm, "Name three colours.")
    second = prompt(llm, "Name three animals.")  # shares the chat template's start with `first`
    loop = TokenLoop(llm)
    loop.reset()
    fresh = with_loop(loop, second, greedy, 24)
    loop.reset()
    with_loop(loop, first, greedy, 24)
    shared = next(n for n, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert loop.keep_prefix(second) == shared  # what the cache held of the first prompt, up to where they part
    assert loop.kv == second[:shared]
    assert with_loop(loop, second, greedy, 24) == fresh
    # The same prompt again: all but its last token come from the cache, which is evaluated again for its logits.
    assert loop.keep_prefix(second) == len(second) - 1


def test_top_alternatives_are_log_probabilities_of_the_likeliest_tokens(llm: Any) -> None:
    loop = TokenLoop(llm)
    loop.reset()
    loop.evaluate(prompt(llm, "What is the capital of France?"))
    sampler = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0), loop.n_vocab)
    chosen = sampler.sample(loop.ctx)
    sampler.close()
    logprob, best = loop.top_alternatives(chosen, k=5)
    assert best[0][0] == chosen and math.isclose(best[0][1], logprob)  # greedy took the likeliest
    assert [p for _, p in best] == sorted((p for _, p in best), reverse=True)
    assert all(p <= 0 for _, p in best) and sum(math.exp(p) for _, p in best) <= 1.0 + 1e-6
