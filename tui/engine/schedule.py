"""CPU scheduling: how many llama.cpp threads each worker runs, and when.

On a small machine, several models decoding at once with a full set of threads each
oversubscribe the cores and everything slows down many times over (measured on 2 cores:
four models x 2 threads at once took 100 s for a turn that took 11-12 s one model after
another). The rule here is: never more busy llama.cpp threads than cores.

The mechanism is `Lanes`, a lease on the machine's cores shared by all worker
processes: a worker holds as many cores as it runs threads for each step (its prompt,
then one new token at a time) and hands them on afterwards. A policy chooses how many
threads a prompt step and a decode step run:

- `baton` (default): every step runs on every core, so models take turns token by
  token. All panes stream at once and no two models ever share a core.
- `split`: the cores divided between models running side by side (with more models
  than cores, they take turns for each share).
- `mixed`: prompts on every core, as in `baton` (prompts are compute-bound), tokens one
  core each, as in `split`.

`ladder bench` measures them against running the models one after another. On 2 cores
with the four offline models (median of 3 rounds, 64 tokens each): baton 1.02x the
sequential time with every first token within 2.1x its solo time; mixed 1.07x / 2.2x;
split 1.13x / 2.6x. Hence the default.

Waiting steps are served prompt work first, least remaining work first (so each pane
waits only for shorter prompts), then decode steps first come, first served, so no
model starves.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnContext

MAX_WORKERS = 32


class Cancelled(Exception):
    """The turn was cancelled while waiting for a lane."""


@dataclass(frozen=True)
class Plan:
    prompt_threads: int  # threads (and cores held) for a prompt step
    decode_threads: int  # threads (and cores held) for a one-token step


@dataclass(frozen=True)
class Policy:
    name: str
    description: str

    def plan(self, models: int, cores: int) -> Plan:
        share = max(1, cores // max(1, min(models, cores)))  # cores each, with every model running
        if self.name == "split":
            return Plan(prompt_threads=share, decode_threads=share)
        if self.name == "mixed":
            return Plan(prompt_threads=cores, decode_threads=share)
        return Plan(prompt_threads=cores, decode_threads=cores)


POLICIES = {
    "baton": Policy("baton", "every step on every core: models take turns token by token"),
    "split": Policy("split", "the cores divided between models running side by side"),
    "mixed": Policy("mixed", "prompts on every core, tokens one core each, side by side"),
}
DEFAULT_POLICY = "baton"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


DECODE = 2**62  # the priority of a decode step; a prompt's is the work it needs
GATHER = 0.01  # seconds prompt work waits for other prompts of the same turn


def prefill_priority(params: int, tokens: int) -> int:
    """Prompt work goes before decode steps, the least remaining work first (model size
    times tokens left): each pane shows its first token after only the shorter prompts
    of other models, not after every other model's tokens."""
    return (params // 1000) * max(tokens, 1)


class Lanes:
    """A lease on `capacity` cores, shared across processes: each step holds as many as
    it runs threads. Waiters are served by priority (lower first), first come first
    served among equals; while the first in line waits for enough cores, no one passes.

    Created in the parent and handed to each worker at spawn; each worker uses its own
    slot number. The parent calls `forget(slot)` when a worker dies, so cores held by a
    killed process are handed on instead of being lost.
    """

    def __init__(self, ctx: SpawnContext, capacity: int) -> None:
        self._lock = ctx.Lock()
        self._free = ctx.Value("i", capacity, lock=False)
        self.capacity = capacity
        self._queue = ctx.Array("i", MAX_WORKERS, lock=False)
        self._queued = ctx.Value("i", 0, lock=False)
        self._priority = ctx.Array("q", MAX_WORKERS, lock=False)  # of each waiting slot
        self._wanted = ctx.Array("i", MAX_WORKERS, lock=False)  # cores each waiting slot asks for
        self._holding = ctx.Array("i", MAX_WORKERS, lock=False)  # cores each slot holds
        self._wake = [ctx.Semaphore(0) for _ in range(MAX_WORKERS)]

    def acquire(self, slot: int, cancel: threading.Event, priority: int = DECODE, cores: int = 1) -> None:
        cores = max(1, min(cores, self.capacity))
        with self._lock:
            if self._free.value >= cores and self._queued.value == 0 and priority == DECODE:
                self._free.value -= cores
                self._holding[slot] = cores
                return
            self._queue[self._queued.value] = slot
            self._priority[slot] = priority
            self._wanted[slot] = cores
            self._queued.value += 1
        if priority != DECODE:
            # A turn reaches every model at once: wait a moment so that all their
            # prompts are queued, and the least work, not the quickest to ask, goes first.
            time.sleep(GATHER)
            with self._lock:
                self._grant_ready()
        while not self._wake[slot].acquire(timeout=0.05):
            if cancel.is_set():
                with self._lock:
                    if self._dequeue(slot):
                        self._grant_ready()  # whoever waited behind us may fit now
                        raise Cancelled
                # Cores were handed to us just now: take them and pass them straight on.
                self._wake[slot].acquire()
                self.release(slot)
                raise Cancelled

    def release(self, slot: int) -> None:
        with self._lock:
            self._free.value += self._holding[slot]
            self._holding[slot] = 0
            self._grant_ready()

    def forget(self, slot: int) -> None:
        """Clean up after a worker that died: leave the queue, hand on what it held."""
        with self._lock:
            self._dequeue(slot)
            self._free.value += self._holding[slot]
            self._holding[slot] = 0
            self._grant_ready()
            while self._wake[slot].acquire(block=False):
                pass

    # Callers hold self._lock for the helpers below.

    def _grant_ready(self) -> None:
        while self._queued.value > 0:
            waiting = [self._queue[i] for i in range(self._queued.value)]
            slot = min(waiting, key=lambda s: self._priority[s])  # min() keeps the earliest of equals
            wanted = self._wanted[slot]  # acquire() capped it at the capacity
            if wanted > self._free.value:
                return
            self._dequeue(slot)
            self._free.value -= wanted
            self._holding[slot] = wanted
            self._wake[slot].release()

    def _dequeue(self, slot: int) -> bool:
        waiting = [self._queue[i] for i in range(self._queued.value)]
        if slot not in waiting:
            return False
        waiting.remove(slot)
        for i, other in enumerate(waiting):
            self._queue[i] = other
        self._queued.value = len(waiting)
        return True
