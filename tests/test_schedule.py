"""The CPU lease (`Lanes`) shared by worker threads and processes, the scheduling policies, and
the engine's plan for the models it has."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from waiting import wait_for

from tui.cards import load_catalog
from tui.engine.local import Engine
from tui.engine.schedule import DECODE, POLICIES, Cancelled, Lanes, Plan, prefill_priority

SPAWN = multiprocessing.get_context("spawn")
NEVER = threading.Event()  # a cancel event that is never set


def take(lanes: Lanes, slot: int, within: float = 2.0) -> None:
    """Acquire a lane, failing with Cancelled if it is not granted within `within` seconds."""
    cancel = threading.Event()
    timer = threading.Timer(within, cancel.set)
    timer.start()
    try:
        lanes.acquire(slot, cancel)
    finally:
        timer.cancel()


def queued(lanes: Lanes) -> int:
    """How many slots wait (there is no public view of the queue; read only to order the test's steps)."""
    return sum(1 for joined in lanes._joined if joined)


def start(target: Callable[..., Any], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("capacity", [1, 2])
def test_never_more_holders_than_lanes(capacity: int) -> None:
    """Four threads competing for `capacity` lanes: at most `capacity` hold one at a time."""
    lanes = Lanes(SPAWN, capacity)
    guard = threading.Lock()
    holders, peak = 0, 0

    def work(slot: int) -> None:
        nonlocal holders, peak
        for _ in range(60):
            take(lanes, slot, within=10)
            with guard:
                holders += 1
                peak = max(peak, holders)
            time.sleep(0.0005)
            with guard:
                holders -= 1
            lanes.release(slot)

    threads = [start(work, slot) for slot in range(4)]
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert peak == capacity


def test_waiters_served_first_come_first_served() -> None:
    """Waiting slots get the lane in the order they asked, not by slot number."""
    lanes = Lanes(SPAWN, 1)
    take(lanes, 0)
    order: list[int] = []

    def take_once(slot: int) -> None:
        take(lanes, slot)
        order.append(slot)
        lanes.release(slot)

    threads = []
    for slot in (3, 1, 2, 5):
        threads.append(start(take_once, slot))
        wait_for(lambda: queued(lanes) == len(threads), what="the waiters to queue")
    lanes.release(0)
    for thread in threads:
        thread.join(5)
    assert order == [3, 1, 2, 5]


def test_cancel_while_waiting() -> None:
    """A waiter whose cancel event is set raises Cancelled promptly and leaves the lane usable."""
    lanes = Lanes(SPAWN, 1)
    take(lanes, 0)
    cancel = threading.Event()
    outcome: list[Any] = []

    def wait_for_lane() -> None:
        try:
            lanes.acquire(1, cancel)
            outcome.append("acquired")
        except Cancelled:
            outcome.append(time.monotonic())

    thread = start(wait_for_lane)
    wait_for(lambda: queued(lanes) == 1, what="the waiter to queue")
    cancelled_at = time.monotonic()
    cancel.set()
    thread.join(2)
    assert len(outcome) == 1 and outcome[0] != "acquired"
    assert outcome[0] - cancelled_at < 0.3
    assert queued(lanes) == 0

    lanes.release(0)
    take(lanes, 1)  # the cancelled slot can wait again and get it
    lanes.release(1)
    take(lanes, 2)


def test_cancel_racing_a_grant_loses_no_lane() -> None:
    """Cancel set just as the lane is handed over: whatever wins, the lane is not lost or doubled."""
    lanes = Lanes(SPAWN, 1)

    def wait_for_lane(cancel: threading.Event) -> None:
        try:
            lanes.acquire(1, cancel)
        except Cancelled:
            return
        lanes.release(1)

    for attempt in range(40):
        take(lanes, 0)
        cancel = threading.Event()
        thread = start(wait_for_lane, cancel)
        wait_for(lambda: queued(lanes) == 1, what="the waiter to queue")
        if attempt % 2:
            # Not a wait for a condition: every other round, the race starts later, once the waiter
            # sits in its timed wait, so that both its cancel check and its wake-up are raced.
            time.sleep(0.05)
        cancel.set()
        lanes.release(0)
        thread.join(2)
        assert not thread.is_alive()
        take(lanes, 2)  # a lost lane would make this (or a later round) time out
        lanes.release(2)
    take(lanes, 2)
    with pytest.raises(Cancelled):
        take(lanes, 3, within=0.1)  # a doubled lane, from any round, would let this in


def test_forget_hands_on_a_held_lane() -> None:
    """forget(slot) for a holder that is gone gives its lane to the next waiter."""
    lanes = Lanes(SPAWN, 1)
    take(lanes, 0)
    got: list[int] = []
    thread = start(lambda: (take(lanes, 1), got.append(1)))
    wait_for(lambda: queued(lanes) == 1, what="the waiter to queue")
    lanes.forget(0)
    thread.join(2)
    assert got == [1]
    lanes.release(0)  # a late release from the forgotten slot changes nothing
    with pytest.raises(Cancelled):
        take(lanes, 2, within=0.1)


# --- across processes ---------------------------------------------------------------------------


def _take_turns(lanes: Lanes, slot: int, record: Any, count: Any, guard: Any, cycles: int) -> None:
    def note(value: int) -> None:
        with guard:
            record[count.value] = value
            count.value += 1

    for _ in range(cycles):
        lanes.acquire(slot, threading.Event())
        note(slot)
        time.sleep(0.001)
        note(-slot)
        lanes.release(slot)


def _hold_forever(lanes: Lanes, slot: int, holding: Any) -> None:
    lanes.acquire(slot, threading.Event())
    holding.set()
    time.sleep(600)


def test_processes_never_overlap() -> None:
    """Two spawned processes taking turns 50 times each are never inside a lane together."""
    cycles = 50
    lanes = Lanes(SPAWN, 1)
    record = SPAWN.Array("i", 4 * cycles, lock=False)
    count = SPAWN.Value("i", 0, lock=False)
    guard = SPAWN.Lock()
    workers = [SPAWN.Process(target=_take_turns, args=(lanes, slot, record, count, guard, cycles)) for slot in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    entries = list(record[: count.value])
    assert len(entries) == 4 * cycles
    pairs = list(zip(entries[::2], entries[1::2], strict=True))
    assert all(enter > 0 and leave == -enter for enter, leave in pairs), entries
    assert sorted(enter for enter, _ in pairs) == [1] * cycles + [2] * cycles


def test_killed_workers_are_forgotten() -> None:
    """Workers killed while holding or waiting for the lane are cleaned up by forget(); exactly one
    lane is left, free for the next."""
    lanes = Lanes(SPAWN, 1)
    holding, never_set = SPAWN.Event(), SPAWN.Event()  # kept referenced until the children start
    holder = SPAWN.Process(target=_hold_forever, args=(lanes, 1, holding))
    waiter = SPAWN.Process(target=_hold_forever, args=(lanes, 2, never_set))
    try:
        holder.start()
        assert holding.wait(30)
        waiter.start()
        # The kill below may land inside the lock: the kernel frees it.
        wait_for(lambda: queued(lanes) == 1, timeout=30, what="the waiter to queue")
    finally:
        for process in (holder, waiter):
            if process.pid is not None:
                process.kill()
                process.join(10)
    lanes.forget(1)  # hands the lane to slot 2, which is dead too
    lanes.forget(2)
    take(lanes, 3)
    with pytest.raises(Cancelled):
        take(lanes, 4, within=0.1)


# --- policies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "models", "cores", "plan"),
    [
        ("baton", 4, 2, Plan(prompt_threads=2, decode_threads=2)),
        ("baton", 4, 16, Plan(prompt_threads=16, decode_threads=16)),
        ("split", 4, 2, Plan(prompt_threads=1, decode_threads=1)),
        ("split", 4, 16, Plan(prompt_threads=4, decode_threads=4)),
        ("split", 3, 16, Plan(prompt_threads=5, decode_threads=5)),
        ("split", 1, 2, Plan(prompt_threads=2, decode_threads=2)),
        ("mixed", 4, 2, Plan(prompt_threads=2, decode_threads=1)),
        ("mixed", 4, 16, Plan(prompt_threads=16, decode_threads=4)),
        ("mixed", 1, 8, Plan(prompt_threads=8, decode_threads=8)),
    ],
)
def test_policy_plan(policy: str, models: int, cores: int, plan: Plan) -> None:
    """No step runs more threads than cores; baton uses them all, split shares them,
    mixed uses them all for prompts and shares them for tokens."""
    assert POLICIES[policy].plan(models, cores) == plan
    assert max(plan.prompt_threads, plan.decode_threads) <= cores
    if policy != "baton":
        assert min(models, cores) * plan.decode_threads <= cores


def test_a_step_holds_as_many_cores_as_it_runs_threads() -> None:
    """On 2 cores, two one-thread steps run at once, a two-thread step waits for both,
    and while it waits at the head of the line no one-thread step passes it."""
    lanes = Lanes(SPAWN, 2)
    lanes.acquire(0, NEVER, cores=1)
    lanes.acquire(1, NEVER, cores=1)  # both cores busy now
    got: list[int] = []
    prompt = start(lambda: (lanes.acquire(2, NEVER, prefill_priority(100_000, 10), cores=2), got.append(2)))
    wait_for(lambda: queued(lanes) == 1, what="the prompt step to queue")
    decode = start(lambda: (lanes.acquire(3, NEVER, cores=1), got.append(3)))
    wait_for(lambda: queued(lanes) == 2, what="the decode step to queue")
    lanes.release(0)  # one core free: the prompt at the head still needs two, and the decode may not pass
    assert queued(lanes) == 2 and got == []  # release() grants at once, so no grant now is none at all
    lanes.release(1)
    prompt.join(2)
    assert got == [2]
    lanes.release(2)
    decode.join(2)
    assert got == [2, 3]


def test_prompt_work_goes_first_least_work_first_then_decode_in_arrival_order() -> None:
    """With the lane busy, waiters are served: prompt work by size, then decode steps FIFO."""
    lanes = Lanes(SPAWN, 1)
    lanes.acquire(0, NEVER)  # slot 0 holds the lane
    order: list[int] = []

    def wait(slot: int, priority: int) -> None:
        lanes.acquire(slot, NEVER, priority)
        order.append(slot)
        lanes.release(slot)

    requests = [
        (1, DECODE),
        (2, prefill_priority(1_500_000_000, 40)),
        (3, DECODE),
        (4, prefill_priority(135_000_000, 60)),
        (5, prefill_priority(135_000_000, 10)),
    ]
    threads = []
    for slot, priority in requests:
        threads.append(start(wait, slot, priority))
        wait_for(lambda: queued(lanes) == len(threads), what="the waiters to queue in this order")
    lanes.release(0)
    for thread in threads:
        thread.join(5)
    assert order == [5, 4, 2, 1, 3]


# --- the engine's plan --------------------------------------------------------------------------


async def test_the_plan_and_the_spin_setting_count_only_models_not_closed() -> None:
    """Three models, two closed: the engine plans for one, and one model alone shares no cores."""
    card = load_catalog().cards["smollm2-135m-instruct"]
    engine = Engine("mixed", cores=4)  # prompts on all 4 cores, tokens on 4 // models each
    try:
        models = [engine.model(card) for _ in range(3)]
        for model in models:
            model.state = "ready"  # as if loaded: the plan counts running models
        assert engine.plan() == Plan(prompt_threads=4, decode_threads=1)
        assert engine.cores_change_hands()  # three models' 4-thread prompt steps take turns on the cores
        for model in models[:2]:
            await model.close()
        assert engine.models == models[2:]
        assert engine.plan() == Plan(prompt_threads=4, decode_threads=4)
        assert not engine.cores_change_hands()  # one model alone keeps its cores
    finally:
        await engine.close()
    assert engine.models == []
