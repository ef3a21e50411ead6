"""A scripted stand-in for a model backend, for fast tests of the app and the session.

It honours the same interface as the llama.cpp workers (`tui.engine.base.Backend`):
load (optionally slow or failing), stream a reply word by word with a delay, cancel,
reset. It records every request so tests can check the history and parameters sent. Asked for
token probabilities (`TurnRequest.logprobs`), it gives each word made-up ones (see `word_probs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from tui.cards import ModelCard
from tui.engine.base import ModelLoadError, State
from tui.engine.events import Finished, FirstToken, PromptReady, Scores, TextPiece, TurnEvent, TurnRequest
from tui.sources import Source
from tui.store import Progress

Script = Callable[[TurnRequest], str]


def echo_script(card: ModelCard) -> Script:
    def answer(request: TurnRequest) -> str:
        asked = request.completion if request.completion is not None else request.messages[-1]["content"]
        return f"{card.name} answers: {asked}"

    return answer


WORD_LOGPROBS = (-0.02, -0.4, -1.0, -2.5)  # in turn: 98%, 67%, 37%, 8%, one in each band of the view
OTHER_WORDS = ((" the", 0.5), (" a", 0.25), (" ocean", 0.12), (" fish", 0.08), (" Nemo", 0.05))  # share of the rest


def word_probs(pieces: list[str]) -> list[list[Any]]:
    """Token probabilities for a scripted reply, one token per word (as `TokenRecord` makes them): the
    words in turn in each band, the alternatives the same few words sharing the rest, likeliest first."""
    tokens: list[list[Any]] = []
    for n, piece in enumerate(pieces):
        logprob = WORD_LOGPROBS[n % len(WORD_LOGPROBS)]
        rest = 1 - math.exp(logprob)
        others = [[word, math.log(rest * share)] for word, share in OTHER_WORDS if word != piece]
        tokens.append([piece, logprob, sorted([[piece, logprob], *others], key=lambda pair: -float(pair[1]))[:5]])
    return tokens


def card(card_id: str, params: int, name: str | None = None) -> ModelCard:
    return ModelCard(
        id=card_id,
        name=name or card_id,
        family="Scripted",
        params=params,
        quant="Q4_0",
        size=params // 2,
        sha256="0" * 64,
        context=2048,
        sources=(Source(path="/dev/null"),),
    )


class ScriptedModel:
    def __init__(
        self,
        card: ModelCard,
        *,
        script: Script | None = None,
        delay: float = 0.0,
        load_delay: float = 0.0,
        load_error: str | None = None,
    ) -> None:
        self.card = card
        self.state: State = "waiting"
        self.error: str | None = None
        self.n_ctx = card.context
        self.n_past = 0
        self.script = script or echo_script(card)
        self.delay, self.load_delay, self.load_error = delay, load_delay, load_error
        self.requests: list[TurnRequest] = []
        self._cancelled = asyncio.Event()

    async def load(self, progress: Progress | None = None) -> None:
        self.state = "loading"
        await asyncio.sleep(self.load_delay)
        if self.load_error:
            self.state, self.error = "error", self.load_error
            raise ModelLoadError(self.load_error)
        self.state = "ready"

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        self.requests.append(request)
        self.state = "busy"
        self._cancelled.clear()
        prompt_tokens = len(self._prompt_text(request).split())
        yield PromptReady(prompt_tokens, 0)
        words = self.script(request).split(" ")[: request.params.max_tokens]
        pieces = [word if n == 0 else " " + word for n, word in enumerate(words)]
        text = ""
        for n, word in enumerate(words):
            if self.delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cancelled.wait(), self.delay)
            if self._cancelled.is_set():
                self.state = "ready"
                yield Finished(
                    "cancelled",
                    "cancelled",
                    text.strip(),
                    prompt_tokens,
                    0,
                    n,
                    ttft_s=self.delay if n else None,
                    elapsed_s=self.delay * n,
                )
                return
            if n == 0:
                yield FirstToken(self.delay)
            piece = word if n == 0 else " " + word
            text += piece
            yield TextPiece(piece)
        self.state = "ready"
        self.n_past = prompt_tokens + len(words)
        # Nominal rather than measured numbers, so that screenshots are the same every run.
        yield Finished(
            "done",
            "stop" if len(words) < request.params.max_tokens else "length",
            text,
            prompt_tokens,
            0,
            len(words),
            ttft_s=self.delay,
            tokens_per_s=1 / self.delay if self.delay else None,
            elapsed_s=self.delay * len(words),
            tokens=word_probs(pieces) if request.logprobs else None,
        )

    async def score(self, request: TurnRequest, continuations: list[str]) -> Scores:
        """A continuation the scripted reply starts with is likely (-0.1 a word), any other is not
        (-3.0 a word): the fake's scores agree with its replies."""
        self.requests.append(request)
        if self.state != "ready":
            return Scores("error", error=f"{self.card.name} cannot score: it is {self.state}")
        reply = self.script(request).strip().lower()
        logprobs = []
        for continuation in continuations:
            words = continuation.split() or [""]
            likely = reply.startswith(continuation.strip().lower())
            logprobs.append([-0.1 if likely else -3.0] * len(words))
        return Scores("done", logprobs, prompt_tokens=len(self._prompt_text(request).split()))

    @staticmethod
    def _prompt_text(request: TurnRequest) -> str:
        return (
            request.completion if request.completion is not None else " ".join(m["content"] for m in request.messages)
        )

    async def cancel(self) -> None:
        self._cancelled.set()

    async def reset(self) -> None:
        self.n_past = 0

    async def close(self) -> None:
        self.state = "closed"
