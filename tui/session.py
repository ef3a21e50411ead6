"""A session: one shared history of user turns, each model's own replies, and the
transcript they are saved to. Used by `ladder ask` and by the chat app alike."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from tui import __version__
from tui.blind import Blind, GuessScore, refusal
from tui.checks import CheckResult, Item, Score, run_check
from tui.conversation import FEW_SHOT_NOTICE, Conversation
from tui.engine.base import Backend, ModelLoadError
from tui.engine.events import Finished, SamplingParams, TurnEvent
from tui.history import SessionRecord, saved_params
from tui.scenario import Scenario
from tui.store import Progress
from tui.transcript import TranscriptError, TranscriptWriter


@dataclass(frozen=True)
class Checked:
    """The scenario's check of a reply that just finished, and the model's running score."""

    result: CheckResult
    score: Score


def _llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"


class Session:
    def __init__(
        self,
        models: list[Backend],
        *,
        sessions_dir: Path,
        params: SamplingParams | None = None,
        model_params: dict[str, dict[str, Any]] | None = None,
        system: str = "",
        lineup: str | None = None,
        scenario: Scenario | None = None,
        engine_info: dict[str, Any] | None = None,
        few_shot: bool = True,
        logprobs: bool = False,
    ) -> None:
        self.models = sorted(models, key=lambda model: model.card.order)
        self.params = params or SamplingParams()
        self.model_params = model_params or {}
        self.conversation = Conversation(system=system, opening=scenario.opening if scenario else ())
        self.lineup, self.scenario = lineup, scenario
        # Base models (cards with instruct: false) echo a question asked in chat form: a scenario's
        # items are put to them as the lab does, few-shot, unless the setting is turned off.
        self.few_shot = few_shot
        # Record each reply's token probabilities (a `token_probs` event after its reply), kept by (turn, model id).
        self.logprobs = logprobs
        self.token_probs: dict[tuple[int, str], list[list[Any]]] = {}
        self.items: dict[int, Item] = {}  # the scenario item each turn asked, by turn
        self.items_asked = 0
        self.scores: dict[str, Score] = {}
        self.rng = random.Random()
        self.replay_of: str | None = None  # the saved session whose user turns this one sends again
        self.blind: Blind | None = None  # a blind session: the panes' shuffled order, votes, the guess
        self.guess_score = GuessScore()  # "guess the largest", over the blind sessions of this run
        self.sessions_dir = sessions_dir
        self.engine_info = engine_info or {}
        self.transcript = TranscriptWriter(sessions_dir, {}, name=scenario.id if scenario else None)
        self.epoch = 0  # counts the times this session started over: a late reply of an earlier one is not saved
        self._seeds: dict[int, int] = {}  # the seed of each turn, shared by the models without their own
        self._cancelled_through: dict[str, int] = {}  # model id -> its replies up to this turn are cancelled

    def header(self) -> dict[str, Any]:
        return {
            "app": f"ladder {__version__}",
            "llama_cpp_python": _llama_cpp_version(),
            "lineup": self.lineup,
            "models": [model.card.header() for model in self.models],
            "params": self.params.as_dict(),
            "model_params": self.model_params,
            "system": self.conversation.system,
            "scenario": self.scenario.header() if self.scenario else None,
            "engine": self.engine_info,
            "few_shot": self.few_shot,
            "logprobs": self.logprobs,
            **({"replay_of": self.replay_of} if self.replay_of else {}),
            **({"blind": self.blind.header()} if self.blind else {}),
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
        return {model.card.id: error for model, error in zip(self.models, results, strict=True) if error}

    def next_item(self) -> Item:
        """The scenario's next item (lists wrap around; generators make fresh ones)."""
        assert self.scenario is not None and self.scenario.has_items
        item = self.scenario.item(self.items_asked, self.rng)
        self.items_asked += 1
        return item

    def save(self, event: dict[str, Any]) -> None:
        """Add an event to the transcript. One that cannot be written (a full disk) is kept in
        `transcript.pending`, the reason in `transcript.failure`, and written with the next
        event or by `transcript.save_elsewhere`: the session goes on either way."""
        if not self.transcript.header:
            self.transcript.header = self.header()  # after loading: derived cards know their hash now
        with contextlib.suppress(TranscriptError):
            self.transcript.write(event)

    def start_turn(self, text: str, item: Item | None = None) -> int:
        """Record a new user turn (asking `item`, if given); returns its number (from 1)."""
        self.conversation.user_turns.append(text)
        turn = len(self.conversation.user_turns)
        self._seeds[turn] = self.params.seed if self.params.seed is not None else random.randrange(2**31)
        event: dict[str, Any] = {"type": "user", "turn": turn, "text": text}
        if item is not None:
            self.items[turn] = item
            event["item"] = item.record()
        self.save(event)
        return turn

    async def answer(self, model: Backend, turn: int, epoch: int | None = None) -> AsyncIterator[TurnEvent | Checked]:
        """Stream one model's reply to user turn `turn`, and record it when it finishes.

        `epoch` is `self.epoch` when the turn was asked (default: now). A reply cancelled
        before it started, or to a turn of a session since started over, ends at once; one
        that ends after the session started over is not recorded in the new one.
        """
        epoch = self.epoch if epoch is None else epoch
        if epoch != self.epoch:
            yield Finished("cancelled", "cancelled", "")
            return
        params = self.params.with_changes(self.model_params.get(model.card.id, {}))  # its own, over the session's
        if params.seed is None:
            params = params.with_changes({"seed": self._seeds[turn]})
        if turn <= self._cancelled_through.get(model.card.id, 0):  # Esc came before the model started
            cancelled = Finished("cancelled", "cancelled", "")
            self._record(turn, model, cancelled, params, None)
            yield cancelled
            return
        request = self.conversation.request_for(
            model.card,
            turn,
            [m.card.id for m in reversed(self.models)],  # the largest first
            params,
            scenario=self.scenario,
            item=self.items.get(turn),
            few_shot=self.few_shot,
            logprobs=self.logprobs,
        )
        async for event in model.turn(request):
            if not isinstance(event, Finished):
                yield event
                continue
            if epoch != self.epoch:
                yield event
                return
            if request.completion is not None:
                event = replace(event, text=event.text.strip(), notices=[*event.notices, FEW_SHOT_NOTICE])
            check = self._check(turn, event)
            self._record(turn, model, event, params, check, form="few-shot" if request.completion else "chat")
            yield event
            if check is not None:
                score = self.scores.setdefault(model.card.id, Score())
                score.add(check, self.items[turn].variant if turn in self.items else None)
                yield Checked(check, score)

    def _check(self, turn: int, event: Finished) -> CheckResult | None:
        if self.scenario is None or self.scenario.check is None or event.status != "done":
            return None
        return run_check(self.scenario.check, event.text, self.items.get(turn))

    async def send(self, text: str, item: Item | None = None) -> AsyncIterator[tuple[Backend, TurnEvent | Checked]]:
        """Send one user turn to every ready model; yields their events as they arrive."""
        turn = self.start_turn(text, item)
        events: asyncio.Queue[tuple[Backend, TurnEvent | Checked | None]] = asyncio.Queue()

        async def pump(model: Backend) -> None:
            try:
                async for event in self.answer(model, turn):
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

    def _record(
        self,
        turn: int,
        model: Backend,
        event: Finished,
        params: SamplingParams,
        check: CheckResult | None,
        form: str = "chat",
    ) -> None:
        self.conversation.replies.setdefault(model.card.id, {})[turn] = event.text
        self.save(
            {
                "type": "reply",
                "turn": turn,
                "model": model.card.id,
                "status": event.status,
                "finish_reason": event.finish_reason,
                "text": event.text,
                "error": event.error,
                "prompt_tokens": event.prompt_tokens,
                "cached_tokens": event.cached_tokens,
                "completion_tokens": event.completion_tokens,
                "ttft_s": _round(event.ttft_s),
                "tokens_per_s": _round(event.tokens_per_s),
                "elapsed_s": _round(event.elapsed_s),
                "params": params.as_dict(),
                "notices": event.notices,
                **({"remote": event.remote} if event.remote else {}),
                **({"schedule": event.schedule} if event.schedule else {}),
                **({"check": check.record()} if check else {}),
                **({"form": form} if form != "chat" else {}),
            }
        )
        if event.tokens:  # recorded, and not empty
            self.token_probs[turn, model.card.id] = event.tokens
            self.save({"type": "token_probs", "turn": turn, "model": model.card.id, "tokens": _rounded(event.tokens)})

    def change_settings(
        self,
        *,
        params: SamplingParams | None = None,
        model_params: dict[str, dict[str, Any]] | None = None,
        system: str | None = None,
        few_shot: bool | None = None,
        logprobs: bool | None = None,
    ) -> None:
        """New sampling parameters, system prompt, few-shot or token probabilities setting, used from the next
        turn on."""
        if params is not None:
            self.params = params
        if model_params is not None:
            self.model_params = model_params
        if system is not None:
            self.conversation.system = system
        if few_shot is not None:
            self.few_shot = few_shot
        if logprobs is not None:
            self.logprobs = logprobs
        if self.transcript.started:  # before the first turn the header records them
            self.save(
                {
                    "type": "settings",
                    "params": self.params.as_dict(),
                    "model_params": self.model_params,
                    "system": self.conversation.system,
                    "few_shot": self.few_shot,
                    "logprobs": self.logprobs,
                }
            )

    def add_model(self, model: Backend) -> None:
        self.models = sorted([*self.models, model], key=lambda m: m.card.order)
        if self.transcript.started:
            self.save({"type": "models", "added": [model.card.header()], "removed": []})

    async def remove_model(self, model_id: str) -> None:
        gone = [model for model in self.models if model.card.id == model_id]
        self.models = [model for model in self.models if model.card.id != model_id]
        for model in gone:
            await model.close()
        if gone and self.transcript.started:
            self.save({"type": "models", "added": [], "removed": [model_id]})

    async def start_over(self, scenario: Scenario | None = None, blind: bool = False) -> None:
        """A new session: empty history, a new transcript file, every model's cache cleared.
        With a scenario: its system prompt, opening turns and suggested parameters; `blind`:
        a blind one (see `start_blind`). Events the old transcript could not save are dropped:
        callers offer to save them first."""
        with contextlib.suppress(TranscriptError):
            self.end_transcript()
        if scenario is not None:
            self.scenario = scenario
            self.conversation = Conversation(system=scenario.system, opening=scenario.opening)
            self.params = SamplingParams().with_changes(scenario.params)
            self.model_params = {}
        else:
            self.conversation = Conversation(system=self.conversation.system, opening=self.conversation.opening)
        name = self.scenario.id if self.scenario else None
        self.transcript = TranscriptWriter(self.sessions_dir, {}, name=name)
        self.items, self.items_asked, self.scores = {}, 0, {}
        self.token_probs.clear()
        self._seeds.clear()
        self._cancelled_through.clear()  # turns count from 1 again; the epoch tells old ones apart
        self.blind = None
        if blind:
            self.start_blind()
        for model in self.models:
            await model.reset()

    def start_blind(self, seed: int | None = None) -> None:
        """Make this new session blind: its models in an order shuffled with `seed` (default: a fresh
        one), recorded in the header. Raises ValueError saying why, if it cannot be."""
        problem = refusal(len(self.models))
        if problem:
            raise ValueError(f"Blind mode {problem}")
        if self.transcript.started:
            raise ValueError("A session is blind from its start: this one's names have been seen")
        self.blind = Blind.draw([model.card.id for model in self.models], seed)

    async def cancel(self, model_id: str | None = None) -> None:
        """Stop the replies in flight, and those to the turns asked so far that have not
        started yet (a turn on its way to the model would otherwise run to the end)."""
        for model in self.models:
            if model_id is None or model.card.id == model_id:
                self._cancelled_through[model.card.id] = len(self.conversation.user_turns)
                await model.cancel()

    def end_transcript(self) -> None:
        """Stop recording this session: replies still streaming are not saved (see `answer`).
        Raises TranscriptError when events could not be saved."""
        self.epoch += 1
        self.transcript.close()

    async def close(self) -> None:
        """Close the transcript and the models; raises TranscriptError, after closing the
        models, when events could not be saved."""
        try:
            self.end_transcript()
        finally:
            await asyncio.gather(*(model.close() for model in self.models))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _rounded(tokens: list[list[Any]]) -> list[list[Any]]:
    """Recorded tokens with their log-probabilities to 4 decimals (a probability to about 0.01%): a long
    reply's record stays a few tens of kB."""
    return [[text, round(logprob, 4), [[alt, round(p, 4)] for alt, p in alts]] for text, logprob, alts in tokens]


def resume(
    record: SessionRecord, models: list[Backend], scenario: Scenario | None, engine_info: dict[str, Any] | None = None
) -> Session:
    """A saved session, continued: each model's own history restored, and new turns
    appended to the same transcript file."""
    settings = record.settings
    session = Session(
        models,
        sessions_dir=record.path.parent,
        params=saved_params(settings.get("params")),
        model_params=settings.get("model_params") or {},
        system=str(settings.get("system") or ""),
        lineup=record.header.get("lineup"),
        scenario=scenario,
        engine_info=engine_info,
        few_shot=settings.get("few_shot") is not False,  # sessions saved before the setting: on
        logprobs=settings.get("logprobs") is True,
    )
    for turn in record.turns:
        session.conversation.user_turns.append(turn.text)
        session._seeds[turn.number] = random.randrange(2**31)
        if turn.item is not None:
            session.items[turn.number] = Item.from_record(turn.item)
        for model_id, reply in turn.replies.items():
            session.conversation.replies.setdefault(model_id, {})[turn.number] = reply.text
            if reply.tokens is not None:
                session.token_probs[turn.number, model_id] = reply.tokens
    session.scores = record.scores()
    session.items_asked = len(session.items)
    session.replay_of = record.header.get("replay_of")
    session.transcript = TranscriptWriter.resume(record.path, record.header)
    return session
