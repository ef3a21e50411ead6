"""Waiting for a condition instead of for a fixed time: a loaded machine makes fixed sleeps
flaky, and an idle one makes them slow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(pilot: Any, condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Let the app (driven by a Textual `pilot`) run until `condition()` is true; fail the
    test after `timeout` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await pilot.pause(0.02)


async def eventually(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """The same without an app: poll `condition()` on the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.02)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """The same for plain (not async) tests: poll `condition()` in this thread."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)
