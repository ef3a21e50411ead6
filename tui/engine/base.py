"""The one interface every backend offers: load, stream a turn, score continuations, cancel,
reset, close.

Local llama.cpp workers (`local.py`) and OpenAI-compatible servers (`remote.py`) implement it;
`stream_turn` is the part of a turn they share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol

from tui.cards import ModelCard
from tui.engine.events import Finished, Scores, TurnEvent, TurnRequest
from tui.store import Progress

State = Literal["waiting", "fetching", "loading", "ready", "busy", "error", "closed"]


class ModelLoadError(Exception):
    """The model could not be made ready; the message says why and what to do."""


class Backend(Protocol):
    card: ModelCard
    state: State
    error: str | None  # why the model is in the error state
    n_ctx: int  # context size in tokens, once loaded
    n_past: int  # tokens of this conversation held in the context now

    async def load(self, progress: Progress | None = None) -> None:
        """Fetch and load the model; raises ModelLoadError."""

    def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        """Stream one reply; the last event is always Finished, also on cancel or failure."""

    async def score(self, request: TurnRequest, continuations: list[str]) -> Scores:
        """Log-probabilities of each continuation's tokens after the request's prompt, fitted as a
        turn fits it (of its `params` only `max_tokens` counts: the room kept for a reply); never
        raises: a failure or a backend that cannot score says so in the status. `cancel` stops it."""

    async def cancel(self) -> None:
        """Stop the turn in flight, if any; its stream ends with a cancelled Finished."""

    async def reset(self) -> None:
        """Forget the conversation (the KV cache); the next turn starts afresh."""

    async def close(self) -> None:
        """Release the model and its process."""


async def stream_turn(model: Backend, start: Callable[[], asyncio.Queue[TurnEvent]]) -> AsyncIterator[TurnEvent]:
    """A turn's events as every backend streams them: a model that is not ready answers at once
    with an error; otherwise `start` begins the turn and gives the queue its events arrive on, up
    to its Finished. A caller that stops listening before then cancels the turn."""
    if model.state != "ready":
        why = model.error if model.state == "error" else f"it is {model.state}"
        yield Finished("error", "error", "", error=f"{model.card.name} cannot answer: {why}")
        return
    queue = start()
    finished = False
    try:
        while not finished:
            event = await queue.get()
            finished = isinstance(event, Finished)
            yield event
    finally:
        if not finished:
            await model.cancel()
