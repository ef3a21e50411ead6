"""The one interface every backend offers: load, stream a turn, cancel, reset, close.

Local llama.cpp workers implement it today; a remote OpenAI-compatible server can
implement it later without its callers changing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from tui.cards import ModelCard
from tui.engine.events import TurnEvent, TurnRequest
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

    async def cancel(self) -> None:
        """Stop the turn in flight, if any; its stream ends with a cancelled Finished."""

    async def reset(self) -> None:
        """Forget the conversation (the KV cache); the next turn starts afresh."""

    async def close(self) -> None:
        """Release the model and its process."""
