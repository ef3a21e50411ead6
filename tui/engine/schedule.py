"""CPU scheduling: how many llama.cpp threads each worker runs, and when.

On a small machine, several models decoding at once with a full set of threads each
oversubscribe the cores and everything slows down many times over (measured on 2 cores:
four models x 2 threads at once took 100 s for a turn that took 11-12 s one model after
another). The rule here is: never more busy llama.cpp threads than cores.

The mechanism is `Lanes`, a lease on the machine's cores shared by all worker
processes: a worker holds as many cores as it runs threads for each step (its prompt,
then one new token at a time) and hands them on afterwards. A policy chooses how many
threads a prompt step and a decode step run:

- `baton`: every step runs on every core, so models take turns token by token. All
  panes stream at once and no two models ever share a core.
- `split`: the cores divided between models running side by side (with more models
  than cores, they take turns for each share).
- `mixed`: prompts on every core, as in `baton` (prompts are compute-bound), tokens one
  core each, as in `split`.
- `auto` (default): one of the three for each turn, chosen from the step times this
  machine measured (`tui/engine/autoschedule.py`): the best policy differs between
  machines (on one 2-core machine baton was best, on another mixed and split).

`ladder bench` measures them against running the models one after another.

Waiting steps are served prompt work first, least remaining work first (so each pane
waits only for shorter prompts), then decode steps first come, first served, so no
model starves.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import select
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.context import SpawnContext

MAX_WORKERS = 32
FOLDER_PREFIX = "ladder-lanes-"  # the lanes' folders in the temp folder: then the parent's process id


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
        share = share_of(models, cores)
        if self.name == "split":
            return Plan(prompt_threads=share, decode_threads=share)
        if self.name == "mixed":
            return Plan(prompt_threads=cores, decode_threads=share)
        return Plan(prompt_threads=cores, decode_threads=cores)


def share_of(models: int, cores: int) -> int:
    """Cores each model decodes on side by side (split, mixed), with every model running."""
    return max(1, cores // max(1, min(models, cores)))


POLICIES = {
    "baton": Policy("baton", "every step on every core: models take turns token by token"),
    "split": Policy("split", "the cores divided between models running side by side"),
    "mixed": Policy("mixed", "prompts on every core, tokens one core each, side by side"),
}
AUTO = "auto"  # not a policy of its own: it picks one of POLICIES for each turn
SCHEDULES = (AUTO, *sorted(POLICIES))  # what --schedule takes
DEFAULT_POLICY = AUTO


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
    killed process are handed on instead of being lost, and `close()` when it is done.

    The shared state is facts about each slot, each changed by a single write (what it
    holds; when it joined the queue, or 0), so a worker killed halfway through an update
    leaves it consistent: at worst its last grant lets a step run without holding cores.
    """

    def __init__(self, ctx: SpawnContext, capacity: int) -> None:
        self.capacity = capacity
        self._folder = _Folder.create()
        self._holding = ctx.Array("i", MAX_WORKERS, lock=False)  # cores each slot holds
        self._joined = ctx.Array("q", MAX_WORKERS, lock=False)  # when each slot joined the queue; 0: not waiting
        self._arrivals = ctx.Value("q", 0, lock=False)  # how many have joined the queue so far
        self._priority = ctx.Array("q", MAX_WORKERS, lock=False)  # of each waiting slot
        self._wanted = ctx.Array("i", MAX_WORKERS, lock=False)  # cores each waiting slot asks for

    def acquire(self, slot: int, cancel: threading.Event, priority: int = DECODE, cores: int = 1) -> None:
        cores = max(1, min(cores, self.capacity))
        with self._folder:
            if priority == DECODE and self._free() >= cores and not any(self._joined[:]):
                self._holding[slot] = cores
                return
            self._priority[slot] = priority
            self._wanted[slot] = cores
            self._arrivals.value += 1
            self._joined[slot] = self._arrivals.value
        if priority != DECODE:
            # A turn reaches every model at once: wait a moment so that all their
            # prompts are queued, and the least work, not the quickest to ask, goes first.
            time.sleep(GATHER)
            with self._folder:
                self._grant_ready()
        while self._joined[slot]:  # until a grant clears it, and wakes us
            woken = self._folder.wait(slot, timeout=0.05)
            if woken or not cancel.is_set():
                continue
            with self._folder:
                if self._joined[slot]:
                    self._joined[slot] = 0
                    self._grant_ready()  # whoever waited behind us may fit now
                    raise Cancelled
            # Cores were handed to us just now: pass them straight on.
            self.release(slot)
            raise Cancelled

    def release(self, slot: int) -> None:
        with self._folder:
            self._holding[slot] = 0
            self._grant_ready()

    def forget(self, slot: int) -> None:
        """Clean up after a worker that died: leave the queue, hand on what it held."""
        with self._folder:
            self._joined[slot] = 0
            self._holding[slot] = 0
            self._grant_ready()
            self._folder.drain(slot)

    def close(self) -> None:
        """Remove the files the lanes use (the parent calls it once every worker is gone;
        it also happens when the parent exits normally)."""
        self._folder.remove()

    # Callers hold the lock (`with self._folder`) for the helpers below.

    def _free(self) -> int:
        held: list[int] = self._holding[:]
        return self.capacity - sum(held)

    def _grant_ready(self) -> None:
        while True:
            joined = self._joined[:]
            waiting = [slot for slot, when in enumerate(joined) if when]
            if not waiting:
                return
            slot = min(waiting, key=lambda s: (self._priority[s], joined[s]))
            wanted = self._wanted[slot]  # acquire() capped it at the capacity
            if wanted > self._free():
                return
            self._joined[slot] = 0  # first: if we die right after, the slot runs one step unaccounted
            self._holding[slot] = wanted
            self._folder.wake(slot)


class _Folder:
    """The lanes' lock and wake-ups, as files in a private folder: they need no semaphores,
    which Python's resource tracker reports as leaked when the app is killed.

    The lock is `flock` on a file, which the kernel releases when its holder dies, so a
    worker killed while holding it cannot freeze the others. A flock belongs to an open
    file, so each process opens the files itself (after unpickling, after a fork), and a
    threading lock keeps the threads of one process apart. A slot is woken by a byte in
    its FIFO; the byte is only a hint, as waiters check the shared state when they wake.
    """

    def __init__(self, path: str, owner: bool = False) -> None:
        # Only the parent removes the folder: on close(), or when it exits normally.
        self._remove = weakref.finalize(self, shutil.rmtree, path, ignore_errors=True) if owner else None
        self._attach(path)

    def _attach(self, path: str) -> None:
        """Use the folder at `path` from this process: its own files and threads."""
        self.path = path
        self._threads = threading.Lock()
        self._pid = 0  # the process the files below were opened in
        self._lock = -1
        self._wakes: list[int] = []

    @classmethod
    def create(cls) -> _Folder:
        _remove_leftovers()
        path = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")  # mode 0700
        folder = cls(path, owner=True)
        os.close(os.open(os.path.join(path, "lock"), os.O_CREAT | os.O_WRONLY, 0o600))
        for slot in range(MAX_WORKERS):
            os.mkfifo(os.path.join(path, f"wake-{slot}"), 0o600)
        return folder

    def __getstate__(self) -> str:
        return self.path

    def __setstate__(self, path: str) -> None:  # in a new process: not the owner
        self._remove = None
        self._attach(path)

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._pid != os.getpid():
                self._open()
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._threads.release()

    def _open(self) -> None:
        # A FIFO opened for reading and writing never blocks on open, and keeps its bytes.
        lock = os.open(os.path.join(self.path, "lock"), os.O_RDWR)
        wakes = [
            os.open(os.path.join(self.path, f"wake-{slot}"), os.O_RDWR | os.O_NONBLOCK) for slot in range(MAX_WORKERS)
        ]
        weakref.finalize(self, _close_all, [lock, *wakes])
        self._lock, self._wakes, self._pid = lock, wakes, os.getpid()

    # The methods below need the files open: the lock taken once in this process.

    def wake(self, slot: int) -> None:
        with contextlib.suppress(BlockingIOError):  # full: it has wake-ups enough
            os.write(self._wakes[slot], b"\0")

    def wait(self, slot: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds to be woken; whether we were."""
        ready = select.poll()
        ready.register(self._wakes[slot], select.POLLIN)
        if not ready.poll(timeout * 1000):
            return False
        self.drain(slot)
        return True

    def drain(self, slot: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wakes[slot], 4096)

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()


def _remove_leftovers() -> None:
    """Remove the folders of apps that were killed before they could remove their own."""
    for path in glob.glob(os.path.join(glob.escape(tempfile.gettempdir()), f"{FOLDER_PREFIX}*-*")):
        pid = os.path.basename(path)[len(FOLDER_PREFIX) :].split("-")[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and not _alive(int(pid)) and os.stat(path).st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
