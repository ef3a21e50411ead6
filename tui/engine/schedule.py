"""CPU scheduling: how many llama.cpp threads each worker runs, and when.

On a small machine, several models decoding at once with a full set of threads each
oversubscribe the cores and everything slows down many times over (measured on 2 cores:
four models x 2 threads at once took 100 s for a turn that took 11-12 s one model after
another). The rule here is: never more busy llama.cpp threads than cores.

The mechanism is `Lanes`, a lease shared by all worker processes: a worker holds a lane
for each decode step (a prompt batch or one new token) and hands it on afterwards.
A policy only chooses how many lanes there are and how many threads each lane runs:

- `baton` (default): one lane with every core. All models stream at once, taking turns
  token by token, so the cores are never shared between models and the whole ladder
  costs about what running the models one after another costs.
- `split`: as many lanes as cores allow (up to one per model), the cores divided
  between them. Fewer hand-overs; each model runs on fewer threads.

Waiting workers are served first come, first served, so no model starves.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from multiprocessing.context import SpawnContext

MAX_WORKERS = 32


class Cancelled(Exception):
    """The turn was cancelled while waiting for a lane."""


@dataclass(frozen=True)
class Plan:
    lanes: int  # decode steps that may run at once
    threads: int  # llama.cpp threads per step


@dataclass(frozen=True)
class Policy:
    name: str
    description: str

    def plan(self, models: int, cores: int) -> Plan:
        if self.name == "split":
            lanes = max(1, min(models, cores))
            return Plan(lanes=lanes, threads=max(1, cores // lanes))
        return Plan(lanes=1, threads=cores)


POLICIES = {
    "baton": Policy("baton", "all models stream, taking turns per token with every core"),
    "split": Policy("split", "cores divided between models running side by side"),
}
DEFAULT_POLICY = "baton"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Lanes:
    """A first-come-first-served lease on `capacity` lanes, shared across processes.

    Created in the parent and handed to each worker at spawn; each worker uses its own
    slot number. The parent calls `forget(slot)` when a worker dies, so a lane held by a
    killed process is handed on instead of being lost.
    """

    def __init__(self, ctx: SpawnContext, capacity: int) -> None:
        self._lock = ctx.Lock()
        self._free = ctx.Value("i", capacity, lock=False)
        self._capacity = ctx.Value("i", capacity, lock=False)
        self._queue = ctx.Array("i", MAX_WORKERS, lock=False)
        self._queued = ctx.Value("i", 0, lock=False)
        self._holding = ctx.Array("b", MAX_WORKERS, lock=False)
        self._wake = [ctx.Semaphore(0) for _ in range(MAX_WORKERS)]

    def acquire(self, slot: int, cancel: threading.Event) -> None:
        with self._lock:
            if self._free.value > 0 and self._queued.value == 0:
                self._free.value -= 1
                self._holding[slot] = 1
                return
            self._queue[self._queued.value] = slot
            self._queued.value += 1
        while not self._wake[slot].acquire(timeout=0.05):
            if cancel.is_set():
                with self._lock:
                    if self._dequeue(slot):
                        raise Cancelled
                # A lane was handed to us just now: take it and pass it straight on.
                self._wake[slot].acquire()
                self.release(slot)
                raise Cancelled

    def release(self, slot: int) -> None:
        with self._lock:
            if not self._holding[slot]:
                return
            self._holding[slot] = 0
            self._hand_on()

    def forget(self, slot: int) -> None:
        """Clean up after a worker that died: leave the queue, hand on a held lane."""
        with self._lock:
            self._dequeue(slot)
            if self._holding[slot]:
                self._holding[slot] = 0
                self._hand_on()
            while self._wake[slot].acquire(block=False):
                pass

    def resize(self, capacity: int) -> None:
        with self._lock:
            self._free.value += capacity - self._capacity.value
            self._capacity.value = capacity
            while self._free.value > 0 and self._queued.value > 0:
                self._free.value -= 1
                self._grant_next()

    # Callers hold self._lock for the helpers below.

    def _hand_on(self) -> None:
        if self._queued.value > 0 and self._free.value >= 0:
            self._grant_next()
        else:
            self._free.value += 1

    def _grant_next(self) -> None:
        slot = self._queue[0]
        self._queued.value -= 1
        for i in range(self._queued.value):
            self._queue[i] = self._queue[i + 1]
        self._holding[slot] = 1
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
