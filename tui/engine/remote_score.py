"""Scoring continuations on a remote model (see `RemoteModel.score`): the log-probs of each continuation's
tokens, from the server's echo of prompt + continuation (`/v1/completions` with `echo` and `logprobs`).

Only a completion-form request can be scored (the server's chat template is not known here), and only on
a server whose echoed log-probs sit on the right tokens, which is checked once per model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tui.engine.events import Scores

if TYPE_CHECKING:
    from openai.types import CompletionUsage

# The check: a token's log-prob echoed in a prompt must be the one the server gives it when it generates
# it after this text.
ALIGNMENT_PROMPT = "The capital of France is"
ALIGNMENT_TOLERANCE = 0.1  # nats; the two come from the same server, evaluated in batches of other sizes
CHAT_NOT_SCORED = "scoring needs the few-shot form on a remote model: the server's chat template is not known here"

# One `/v1/completions` request (not streamed) with these fields, retried while the server is busy.
Complete = Callable[..., Awaitable[Any]]


class ScoreUnavailable(Exception):
    """The server answers, but its answers cannot score continuations; the message says why."""


class EchoScorer:
    """Scores a model's continuations: `complete` sends its requests to `host`, and `describe` puts a
    failure in words (the key scrubbed)."""

    def __init__(self, host: str, complete: Complete, describe: Callable[[BaseException], str]) -> None:
        self.host, self.complete, self.describe = host, complete, describe
        self.alignment_checked = False
        self.misaligned: str | None = None  # why this server's prompt log-probs cannot be used, if so

    async def score(self, prompt: str, continuations: list[str]) -> Scores:
        """Each continuation's token log-probs after a completion-form prompt, from the server's echo of
        prompt + continuation (one request each; a server that caches prompts evaluates the shared prompt
        once). Never raises: a failure is a Scores saying why."""
        start = time.perf_counter()
        try:
            await self.check_alignment()
            logprobs: list[list[float]] = []
            prompt_tokens = cached_tokens = 0
            for continuation in continuations:
                found, usage = await self.echoed_logprobs(prompt, continuation)
                logprobs.append(found)
                if usage is not None:
                    prompt_tokens = usage.prompt_tokens - len(found)
                    details = usage.prompt_tokens_details
                    cached_tokens = (details.cached_tokens if details else None) or 0
            return Scores("done", logprobs, prompt_tokens, cached_tokens, time.perf_counter() - start)
        except asyncio.CancelledError:
            return Scores("cancelled", elapsed_s=time.perf_counter() - start)
        except ScoreUnavailable as why:
            return Scores("unavailable", elapsed_s=time.perf_counter() - start, error=str(why))
        except Exception as failure:
            return Scores("error", elapsed_s=time.perf_counter() - start, error=self.describe(failure))

    async def echoed_logprobs(self, prompt: str, continuation: str) -> tuple[list[float], CompletionUsage | None]:
        """The log-probs of the continuation's tokens after the prompt, as the server echoes them (those
        whose text offsets lie in the continuation), and the request's usage (None if it gives none).
        One token is generated too (some servers refuse max_tokens=0; llama-cpp-python's takes it to
        mean no limit); it is not counted."""
        text = prompt + continuation
        reply = await self.complete(prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0.0)
        logprobs = reply.choices[0].logprobs if reply.choices else None
        offsets, values = (logprobs.text_offset, logprobs.token_logprobs) if logprobs else (None, None)
        if not offsets or not values:
            raise ScoreUnavailable(f"{self.host} returns no prompt log-probabilities")
        start, end = len(prompt), len(text)
        if continuation and start not in offsets:
            if min(offsets) >= start:  # the generated token's only, as llama-server gives
                raise ScoreUnavailable(f"{self.host} returns no prompt log-probabilities")
            raise ScoreUnavailable(
                f"{self.host} reads the end of the prompt and the start of {continuation!r} as one token, "
                "so that continuation cannot be scored on its own"
            )
        found = [value for offset, value in zip(offsets, values, strict=False) if start <= offset < end]
        if None in found:
            raise ScoreUnavailable(f"{self.host} returns no prompt log-probabilities")
        return found, reply.usage

    async def check_alignment(self) -> None:
        """Once per model: the log-prob the server echoes for a token must be the one it gives that token
        when it generates it. llama-cpp-python's server (0.3.x) echoes each prompt token with the log-prob
        from the position after it when the model has no BOS token (SmolLM2), which no client can undo."""
        if not self.alignment_checked:
            try:
                self.misaligned = await self.find_misalignment()
            except ScoreUnavailable as why:  # no log-probs: a property of the server too, not asked again
                self.misaligned = str(why)
            self.alignment_checked = True
        if self.misaligned:
            raise ScoreUnavailable(self.misaligned)

    async def find_misalignment(self) -> str | None:
        generated = await self.complete(prompt=ALIGNMENT_PROMPT, logprobs=1, max_tokens=1, temperature=0.0)
        choice = generated.choices[0] if generated.choices else None
        values = choice.logprobs.token_logprobs if choice and choice.logprobs else None
        if choice is None or not values or values[0] is None:
            raise ScoreUnavailable(f"{self.host} returns no log-probabilities")
        echoed, _ = await self.echoed_logprobs(ALIGNMENT_PROMPT, choice.text)
        if len(echoed) == 1 and abs(echoed[0] - values[0]) > ALIGNMENT_TOLERANCE:
            return (
                f"{self.host} echoes each prompt token with the log-probability of the position after it "
                "(llama-cpp-python's server does, for a model without a BOS token), so it cannot score; to score "
                "the model, run it in Ladder from its GGUF file, or serve it with vLLM"
            )
        return None  # in line, or the token came back split in two (nothing to compare): trusted
