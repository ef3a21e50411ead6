"""A session: one shared history of user turns, each model's own replies, and the
transcript they are saved to. Used by `ladder ask` and by the chat app alike."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tui import __version__
from tui.engine.base import Backend, ModelLoadError
from tui.engine.events import Finished, Message, SamplingParams, TurnEvent, TurnRequest
from tui.store import Progress
from tui.transcript import TranscriptWriter


@dataclass
class Conversation:
    system: str = ""
    user_turns: list[str] = field(default_factory=list)
    replies: dict[str, dict[int, str]] = field(default_factory=dict)  # model id -> turn -> text

    def messages_for(self, model_id: str) -> list[Message]:
        """The history as this model saw it: every user turn, and its own replies."""
        messages: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        own = self.replies.get(model_id, {})
        for turn, text in enumerate(self.user_turns, start=1):
            messages.append({"role": "user", "content": text})
            if turn < len(self.user_turns):
                # Templates need user and assistant to alternate, so a failed reply is "".
                messages.append({"role": "assistant", "content": own.get(turn, "")})
        return messages


def _llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"


class Session:
    def __init__(self, models: list[Backend], *, sessions_dir: Path, params: SamplingParams | None = None,
                 model_params: dict[str, dict[str, Any]] | None = None, system: str = "",
                 lineup: str | None = None, scenario: str | None = None,
                 engine_info: dict[str, Any] | None = None) -> None:
        self.models = sorted(models, key=lambda model: model.card.params)
        self.params = params or SamplingParams()
        self.model_params = model_params or {}
        self.conversation = Conversation(system=system)
        self.lineup, self.scenario = lineup, scenario
        self.sessions_dir = sessions_dir
        self.engine_info = engine_info or {}
        self.transcript = TranscriptWriter(sessions_dir, {})

    def params_for(self, model_id: str) -> SamplingParams:
        return self.params.with_changes(self.model_params.get(model_id, {}))

    def header(self) -> dict[str, Any]:
        return {
            "app": f"ladder {__version__}", "llama_cpp_python": _llama_cpp_version(),
            "lineup": self.lineup, "models": [model.card.header() for model in self.models],
            "params": self.params.as_dict(), "model_params": self.model_params,
            "system": self.conversation.system, "scenario": self.scenario, "engine": self.engine_info,
        }

    async def load(self, progress: Progress | None = None) -> dict[str, str]:
        """Load every model at once; returns the errors of those that failed, by model id."""

        async def load_one(model: Backend) -> str | None:
            try:
                await model.load(progress)
            except ModelLoadError as error:
                return str(error)
            return None

        results = await asyncio.gather(*(load_one(model) for model in self.models))
        return {model.card.id: error for model, error in zip(self.models, results) if error}

    async def send(self, text: str) -> AsyncIterator[tuple[Backend, TurnEvent]]:
        """Send one user turn to every ready model; yields their events as they arrive."""
        if not self.transcript.header:
            self.transcript.header = self.header()  # after loading: derived cards know their hash now
        turn = len(self.conversation.user_turns) + 1
        seed = self.params.seed if self.params.seed is not None else random.randrange(2**31)
        self.conversation.user_turns.append(text)
        self.transcript.write({"type": "user", "turn": turn, "text": text})
        events: asyncio.Queue[tuple[Backend, TurnEvent | None]] = asyncio.Queue()

        async def pump(model: Backend) -> None:
            params = self.params_for(model.card.id)
            if params.seed is None:
                params = params.with_changes({"seed": seed})
            request = TurnRequest(self.conversation.messages_for(model.card.id), params)
            try:
                async for event in model.turn(request):
                    if isinstance(event, Finished):
                        self._record(turn, model, event, params)
                    await events.put((model, event))
            finally:
                await events.put((model, None))

        tasks = [asyncio.create_task(pump(model)) for model in self.models if model.state == "ready"]
        running = len(tasks)
        try:
            while running:
                model, event = await events.get()
                if event is None:
                    running -= 1
                else:
                    yield model, event
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _record(self, turn: int, model: Backend, event: Finished, params: SamplingParams) -> None:
        self.conversation.replies.setdefault(model.card.id, {})[turn] = event.text
        self.transcript.write({
            "type": "reply", "turn": turn, "model": model.card.id, "status": event.status,
            "finish_reason": event.finish_reason, "text": event.text, "error": event.error,
            "prompt_tokens": event.prompt_tokens, "cached_tokens": event.cached_tokens,
            "completion_tokens": event.completion_tokens, "ttft_s": _round(event.ttft_s),
            "tokens_per_s": _round(event.tokens_per_s), "elapsed_s": _round(event.elapsed_s),
            "params": params.as_dict(), "notices": event.notices,
        })

    async def cancel(self, model_id: str | None = None) -> None:
        for model in self.models:
            if model_id is None or model.card.id == model_id:
                await model.cancel()

    async def close(self) -> None:
        self.transcript.close()
        await asyncio.gather(*(model.close() for model in self.models))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
