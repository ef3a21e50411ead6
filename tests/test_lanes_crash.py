"""The CPU lease (`Lanes`) when processes die: a worker killed inside the lanes' lock, workers killed
while taking turns, and the app itself killed (no leaked-semaphore warning, no folder left for good)."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from tui.engine.schedule import Cancelled, Lanes

SPAWN = multiprocessing.get_context("spawn")
ROOT = Path(__file__).resolve().parent.parent
BOUND = 30.0  # seconds anything here may take; far more than it needs, so a hang fails instead of waiting forever


def finishes(call: Callable[[], Any], timeout: float = BOUND) -> bool:
    """Whether `call` returns within `timeout` seconds (run in a thread, so a hang cannot stop the test run)."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def take_now(lanes: Lanes, slot: int) -> None:
    """Acquire a lane that should be free: Cancelled if it is not granted within a tenth of a second."""
    cancel = threading.Event()
    timer = threading.Timer(0.1, cancel.set)
    timer.start()
    try:
        lanes.acquire(slot, cancel)
    finally:
        timer.cancel()


def assert_exactly_one_lane_free(lanes: Lanes) -> None:
    take_now(lanes, 30)
    with pytest.raises(Cancelled):
        take_now(lanes, 31)
    lanes.release(30)


def stop(process: Any) -> None:
    if process.pid is not None and process.is_alive():
        process.kill()
        process.join(BOUND)


# --- a worker killed inside the lock ------------------------------------------------------------


def _die_inside_the_lock(lanes: Lanes) -> None:
    with lanes._folder:  # the lanes' lock, as acquire(), release() and forget() take it
        os.kill(os.getpid(), signal.SIGKILL)


def _take_a_lane_once(lanes: Lanes, slot: int) -> None:
    lanes.acquire(slot, threading.Event())
    lanes.release(slot)


def test_a_worker_killed_inside_the_lock_blocks_no_one() -> None:
    """A worker SIGKILLed while it holds the lanes' lock: another worker still takes and hands back a
    lane, and the parent's forget() for the dead one returns."""
    lanes = Lanes(SPAWN, 1)
    dying = SPAWN.Process(target=_die_inside_the_lock, args=(lanes,))
    other = SPAWN.Process(target=_take_a_lane_once, args=(lanes, 2))
    try:
        dying.start()
        dying.join(BOUND)
        assert dying.exitcode == -signal.SIGKILL
        other.start()
        other.join(BOUND)
        assert other.exitcode == 0, "the other worker is stuck on the dead worker's lock"
        assert finishes(lambda: lanes.forget(1)), "forget() is stuck on the dead worker's lock"
    finally:
        stop(dying)
        stop(other)
    assert_exactly_one_lane_free(lanes)


# --- workers killed at any moment while taking turns --------------------------------------------


def _take_turns_forever(lanes: Lanes, slot: int, turns: Any) -> None:
    while True:
        lanes.acquire(slot, threading.Event())
        turns[slot] += 1
        lanes.release(slot)


def test_workers_killed_at_any_moment_leave_the_lanes_working() -> None:
    """Three workers take turns on one lane without pause; one after another is SIGKILLed wherever it
    is (often inside the lock or halfway through handing the lane on), forgotten and replaced: the
    others keep taking turns, and once all are gone exactly one lane is left."""
    lanes = Lanes(SPAWN, 1)
    turns = SPAWN.Array("q", 4, lock=False)
    workers: dict[int, Any] = {}

    def start(slot: int) -> None:
        workers[slot] = SPAWN.Process(target=_take_turns_forever, args=(lanes, slot, turns), daemon=True)
        workers[slot].start()

    def all_take_turns() -> None:
        before = list(turns)
        wait_for(
            lambda: all(turns[slot] > before[slot] + 20 for slot in workers),
            timeout=BOUND,
            what="every worker to take 20 more turns",
        )

    try:
        for slot in (1, 2, 3):
            start(slot)
        all_take_turns()
        for slot in (1, 2, 3, 1, 2, 3):
            workers[slot].kill()
            workers[slot].join(BOUND)
            assert finishes(functools.partial(lanes.forget, slot))
            start(slot)
            all_take_turns()
    finally:
        for process in workers.values():
            stop(process)
    for slot in workers:
        lanes.forget(slot)
    assert_exactly_one_lane_free(lanes)


# --- the app killed -----------------------------------------------------------------------------

APP = """
import multiprocessing, os, signal, sys, threading
from tui.engine.schedule import Lanes

def work(lanes):
    lanes.acquire(1, threading.Event())
    lanes.release(1)

if __name__ == "__main__":
    spawn = multiprocessing.get_context("spawn")
    lanes = Lanes(spawn, 1)
    worker = spawn.Process(target=work, args=(lanes,))
    worker.start()
    worker.join(60)
    print(worker.exitcode, lanes._folder.path, flush=True)
    {end}
"""


def run_app(tmp_path: Path, end: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a small app that shares lanes with a worker, then ends with `end`; its output, once every
    process it started (Python's resource tracker among them) is gone, and its lanes' folder."""
    script = tmp_path / "app.py"
    script.write_text(APP.format(end=end))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = app.communicate(timeout=BOUND * 2)  # the pipes close when the last process holding them exits
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(app.pid, signal.SIGKILL)
    printed = out.split()  # the worker's exit code, and the folder
    assert printed[:1] == ["0"], f"the app or its worker failed: {err}"
    return subprocess.CompletedProcess(app.args, app.returncode, out, err), Path(printed[1])


def test_a_killed_app_prints_no_leaked_semaphore_warning(tmp_path: Path) -> None:
    """The app SIGKILLed after a worker used the lanes: nothing reaches the terminal (Python's resource
    tracker used to warn of 33 leaked semaphores)."""
    app, _ = run_app(tmp_path, end="os.kill(os.getpid(), signal.SIGKILL)")
    assert app.returncode == -signal.SIGKILL
    assert app.stderr == ""


def test_the_next_app_removes_the_folder_a_killed_app_left(tmp_path: Path) -> None:
    app, folder = run_app(tmp_path, end="os.kill(os.getpid(), signal.SIGKILL)")
    assert app.returncode == -signal.SIGKILL
    assert folder.is_dir()  # a killed app cannot remove it
    Lanes(SPAWN, 1).close()
    assert not folder.exists()


def test_the_lanes_folder_is_private_and_goes_on_close_and_at_exit(tmp_path: Path) -> None:
    lanes = Lanes(SPAWN, 1)
    folder = Path(lanes._folder.path)
    assert folder.stat().st_mode & 0o777 == 0o700
    lanes.close()
    assert not folder.exists()

    app, folder = run_app(tmp_path, end="sys.exit(0)")  # the app forgets to close()
    assert app.returncode == 0
    assert app.stderr == ""
    assert not folder.exists()
