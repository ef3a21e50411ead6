"""Local models: each one a llama.cpp worker process, driven from the asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

from tui import paths, store
from tui.cards import ModelCard
from tui.engine import worker
from tui.engine.autoschedule import Choice, StepStore, choose, fixed, model_key
from tui.engine.base import ModelLoadError, State, stream_turn
from tui.engine.events import (
    Finished,
    FirstToken,
    Notice,
    PromptReady,
    Scores,
    StepTimes,
    TextPiece,
    TurnEvent,
    TurnRequest,
)
from tui.engine.schedule import AUTO, DEFAULT_POLICY, MAX_WORKERS, POLICIES, SCHEDULES, Lanes, Plan, available_cores

# The turn events (and a score's answer) a worker sends, by the class name it sends with each (see `Worker.send`).
TURN_EVENT_CLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (PromptReady, Notice, FirstToken, TextPiece, Finished, Scores)
}


class Engine:
    """Starts local model workers and shares the machine's cores between them.

    It owns its models until they close: a closed model forgets itself here, so the plan and
    the spin setting count only models that are, or may still become, running.

    The schedule is a policy, or `auto`: a policy chosen for each turn from the step times
    this machine measured, which every turn shared by several models teaches, whatever the
    schedule (see `tui.engine.autoschedule`)."""

    def __init__(self, policy: str = DEFAULT_POLICY, cores: int | None = None, steps: StepStore | None = None) -> None:
        if policy not in SCHEDULES:
            raise ValueError(f"unknown schedule '{policy}' (known: {', '.join(SCHEDULES)})")
        self.schedule = policy
        self.cores = cores or available_cores()
        self.steps = steps or StepStore(self.cores)
        # What the turns run and why (the title line shows it): chosen afresh by each turn's plan.
        self.choice = Choice(POLICIES["baton"], AUTO) if policy == AUTO else fixed(POLICIES[policy], 1)
        self.context = multiprocessing.get_context("spawn")
        # Spawned workers need multiprocessing's resource tracker, a process started on first
        # use with our stderr: start it now, while stderr is the terminal's; inside the app it is
        # Textual's capture, which has no file descriptor, and starting a worker would fail.
        resource_tracker.ensure_running()
        self.lanes = Lanes(self.context, self.cores)
        self.models: list[LocalModel] = []  # made here and not closed yet
        self._free_slots = list(range(MAX_WORKERS))

    def model(self, card: ModelCard) -> LocalModel:
        model = LocalModel(card, self)
        self.models.append(model)
        return model

    def plan(self) -> Plan:
        """The threads of each step. While no model is busy, a turn is starting: choose its policy
        now (the models of a turn all run the one chosen by the first to start)."""
        running = [model for model in self.models if model.state in ("loading", "ready", "busy")]
        if not any(model.state == "busy" for model in running):
            if self.schedule == AUTO:
                self.choice = choose(self.steps.models, [model_key(model.card) for model in running], self.cores)
            else:
                self.choice = fixed(self.choice.policy, len(running))
        return self.choice.policy.plan(max(len(running), 1), self.cores)

    def learn(self, card: ModelCard, finished: Finished, choice: Choice) -> None:
        """Keep a reply's step times if its turn had several models running, as the turns `auto`
        chooses for: alone, a model's steps are quicker (its weights stay in the CPU's caches, and
        its threads spin longer: the short spin of shared turns costs the smallest ~20%, see
        `worker.serve`), which would flatter `baton`."""
        if choice.models > 1:
            self.steps.learn(card, finished)

    def forget(self, model: LocalModel) -> None:
        """A model closed: it no longer counts (its `close` calls this)."""
        if model in self.models:
            self.models.remove(model)

    def cores_change_hands(self) -> bool:
        """Whether multi-threaded steps of different models will use the same cores in
        turn (planned for every model this engine has and has not closed, loaded or not,
        under any policy `auto` may choose)."""
        policies = POLICIES.values() if self.schedule == AUTO else [self.choice.policy]
        for policy in policies:
            plan = policy.plan(max(len(self.models), 1), self.cores)
            threads = max(plan.prompt_threads, plan.decode_threads)
            if threads > 1 and len(self.models) * threads > self.cores:
                return True
        return False

    def take_slot(self) -> int:
        if not self._free_slots:
            raise ModelLoadError(f"at most {MAX_WORKERS} models can be loaded at once")
        return self._free_slots.pop(0)

    def give_back_slot(self, slot: int) -> None:
        self.lanes.forget(slot)
        self._free_slots.append(slot)

    async def close(self) -> None:
        await asyncio.gather(*(model.close() for model in list(self.models)))  # each forgets itself
        self.lanes.close()


def describe_exit(exitcode: int | None, log_path: Path) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:  # a signal without a name, e.g. a real-time one
            name = f"signal {-exitcode}"
        why = {
            "SIGKILL": " most likely because the system ran out of memory",
            # e.g. AMX tiles in a native build, on a VM that does not allow them
            "SIGILL": (
                " by an instruction this CPU or VM does not allow: reinstall llama-cpp-python "
                "with the README's CMAKE_ARGS (a portable build)"
            ),
        }.get(name, "")
        text = f"the model's worker process was killed ({name}){why}"
    else:
        text = f"the model's worker process exited unexpectedly (exit code {exitcode})"
    try:
        last = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
    except OSError:
        last = []
    return text + (f"; its log ends: {last[0][:200]}" if last else "") + ". The other models are unaffected."


def _start_without_sigint(process: BaseProcess) -> None:
    """Start a worker with SIGINT blocked: Ctrl+C in the terminal reaches the whole process
    group, and the parent decides what it means. The child inherits the mask across fork and
    exec, so it is safe while it imports, until `worker.serve` ignores SIGINT and unblocks it."""
    resource_tracker.ensure_running()  # now: starting it within start() would unblock SIGINT again
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class LocalModel:
    """One model in a worker process; see `tui.engine.base.Backend` for the interface."""

    def __init__(self, card: ModelCard, engine: Engine) -> None:
        self.card = card
        self.engine = engine
        self.state: State = "waiting"
        self.error: str | None = None
        self.n_ctx = card.context
        self.n_past = 0
        self.pid: int | None = None
        self.memory: dict[str, int] = {}  # what the worker holds once loaded, and its parts (see Worker.memory)
        self._process: Any = None
        self._commands: Any = None
        self._events: Any = None
        self._slot: int | None = None
        self._ready: asyncio.Future[None] | None = None
        self._queue: asyncio.Queue[TurnEvent | Scores] | None = None  # the turn's or score's in flight
        self._turn_id = 0
        self._partial: list[str] = []  # the reply in flight so far, and the tokens it holds
        self._partial_tokens = 0
        self.turn_choice: Choice | None = None  # the schedule's choice for this model's latest turn
        self._log = paths.cache_dir() / "logs" / f"{card.id}.log"

    async def load(self, progress: store.Progress | None = None) -> None:
        try:
            self.state = "fetching"
            path = await asyncio.to_thread(store.ensure_file, self.card, progress)
            if self.card.sha256 is None:  # a card derived from a file: transcripts record the hash
                sha256 = await asyncio.to_thread(store.file_sha256, path, progress)
                self.card = replace(self.card, sha256=sha256)
        except store.ModelUnavailable as error:
            self._fail(str(error))
            raise ModelLoadError(str(error)) from None
        if self.closed():  # closed (the app quit, the model was removed) while fetching
            raise ModelLoadError(f"{self.card.name} was closed before it loaded")
        self.state = "loading"
        self._slot = self.engine.take_slot()
        self._log.parent.mkdir(parents=True, exist_ok=True)
        context = self.engine.context
        commands_in, self._commands = context.Pipe(duplex=False)
        self._events, events_out = context.Pipe(duplex=False)
        process = context.Process(
            target=worker.serve,
            name=f"ladder-{self.card.id}",
            daemon=True,
            args=(
                self.card,
                str(path),
                commands_in,
                events_out,
                self.engine.lanes,
                self._slot,
                self.engine.plan().decode_threads,
                str(self._log),
                self.engine.cores_change_hands(),
            ),
        )
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        await asyncio.to_thread(_start_without_sigint, process)
        self._process = process  # only now: close() joins it, which needs a started process
        commands_in.close()  # the worker's ends: closing ours lets us see it exit
        events_out.close()
        if self.closed():  # closed while the process started: stop it again
            self.state = "loading"
            await self.close()
            raise ModelLoadError(f"{self.card.name} was closed before it loaded")
        loop.add_reader(self._events.fileno(), self._on_readable)
        await self._ready

    @property
    def schedule_note(self) -> str:
        """Which CPU policy the engine runs now, and why (the title line shows it)."""
        return self.engine.choice.note

    def closed(self) -> bool:
        """Whether `close` was called: `load` asks after each wait, as it may come meanwhile
        (a method, not a property: a type checker would take a property's answer to hold on)."""
        return self.state == "closed"

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.error = message

    # --- messages from the worker ------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            while self._events.poll():
                self._dispatch(self._events.recv())
        except (EOFError, OSError):
            self._on_exit()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.pop("ev")
        if kind == "ready":
            self.n_ctx, self.pid, self.state = message["n_ctx"], message["pid"], "ready"
            self.memory = message["memory"]
            if self._ready and not self._ready.done():
                self._ready.set_result(None)
            return
        if kind == "failed":
            self._fail(message["error"])
            if self._ready and not self._ready.done():
                self._ready.set_exception(ModelLoadError(message["error"]))
            return
        if message.pop("id") != self._turn_id:
            return  # the tail of a turn whose caller stopped listening
        if isinstance(message.get("steps"), dict):  # a Finished's step times, sent as a dict like the rest
            message["steps"] = StepTimes(**message["steps"])
        event = TURN_EVENT_CLASSES[kind](**message)
        if isinstance(event, TextPiece):
            self._partial.append(event.text)
            self._partial_tokens += event.tokens
        if isinstance(event, Finished):
            self.n_past = event.prompt_tokens + event.completion_tokens
            if self.turn_choice is not None:
                self.engine.learn(self.card, event, self.turn_choice)
                event = replace(event, schedule=self.turn_choice.policy.name)
        if isinstance(event, Scores):
            self.n_past = event.prompt_tokens  # the cache holds the prompt, not the continuations
        if isinstance(event, Finished | Scores) and self.state == "busy":
            self.state = "ready"
        if self._queue is not None:
            self._queue.put_nowait(event)

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._events.fileno())
        self._process.join(timeout=2)
        message = describe_exit(self._process.exitcode, self._log)
        if self._slot is not None:
            self.engine.give_back_slot(self._slot)
            self._slot = None
        was_closing = self.state == "closed"
        if self.state == "error" and self.error:
            message = self.error  # the worker said why it failed (e.g. a bad file) before it exited
        elif not was_closing:
            self._fail(message)
        if self._ready and not self._ready.done():
            self._ready.set_exception(ModelLoadError(message))
        if self._queue is not None and not was_closing:
            self._queue.put_nowait(
                Finished(
                    "error",
                    "error",
                    "".join(self._partial).strip(),
                    completion_tokens=self._partial_tokens,
                    error=message,
                )
            )

    # --- the Backend interface -----------------------------------------------------------------

    def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        # A turn's queue gets turn events only (a Scores answers a score).
        return stream_turn(self, lambda: cast("asyncio.Queue[TurnEvent]", self._start("turn", request)))

    async def score(self, request: TurnRequest, continuations: list[str]) -> Scores:
        if self.state != "ready":
            why = self.error if self.state == "error" else f"it is {self.state}"
            return Scores("error", error=f"{self.card.name} cannot score: {why}")
        queue = self._start("score", request, continuations=list(continuations))
        answer: TurnEvent | Scores | None = None
        try:
            answer = await queue.get()
        finally:
            if answer is None:  # the caller was cancelled: so is the score
                await self.cancel()
        if isinstance(answer, Scores):
            return answer
        # The worker exited meanwhile: `_on_exit` ended the call with a Finished saying why.
        return Scores("error", error=answer.error if isinstance(answer, Finished) else None)

    def _start(self, op: str, request: TurnRequest, **extra: Any) -> asyncio.Queue[TurnEvent | Scores]:
        """Send a turn or a score to the worker; its events arrive on the queue returned."""
        self._turn_id += 1
        self._partial, self._partial_tokens = [], 0
        self._queue = asyncio.Queue()
        plan = self.engine.plan()  # while this model is not busy yet: the first of a turn chooses for all
        self.turn_choice = self.engine.choice
        self.state = "busy"
        message = {
            "op": op,
            "id": self._turn_id,
            "messages": request.messages,
            "completion": request.completion,
            "stop": list(request.stop),
            "logprobs": request.logprobs,
            "params": request.params.as_dict(),
            "plan": asdict(plan),
            **extra,
        }
        # A worker that died just now cannot read it; its exit, seen soon, ends the call instead.
        with contextlib.suppress(OSError):
            self._commands.send(message)
        return self._queue

    async def cancel(self) -> None:
        if self.state == "busy":
            self._commands.send({"op": "cancel", "id": self._turn_id})

    async def reset(self) -> None:
        if self.state in ("ready", "busy"):
            await self.cancel()
            self._commands.send({"op": "reset"})
        self.n_past = 0

    async def close(self) -> None:
        self.engine.forget(self)
        if self._process is None or self.state == "closed":
            self.state = "closed"
            return
        # A busy worker reads its commands while it decodes, but acts on a stop only after its
        # turn: cancel the turn first, or it runs on until it is killed below.
        try:
            await self.cancel()
            self._commands.send({"op": "stop"})
        except OSError:
            pass
        self.state = "closed"
        await asyncio.to_thread(self._process.join, 3)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join, 3)
        with contextlib.suppress(ValueError, OSError):  # the pipe is closed already
            asyncio.get_running_loop().remove_reader(self._events.fileno())
        if self._slot is not None:
            self.engine.give_back_slot(self._slot)
            self._slot = None
