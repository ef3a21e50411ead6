"""`ladder bench`, the figures about the chat app: key-to-screen latency with every pane
streaming against the same app idle, the app's own CPU, and the start to a usable composer
against a minimal Textual app."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tui.cards import ModelCard
from tui.commands.bench_models import greedy
from tui.engine.local import Engine

STORY = "Write a long story about a lighthouse keeper and a storm."
TYPING_INTERVAL_S = 0.12  # between keys, as a quick typist: each key meets the streaming afresh


# --- 4. the chat app streaming, headless ---------------------------------------------------------


async def app_streaming(cards: list[ModelCard], tokens: int, policy: str) -> dict[str, Any]:
    from textual import events

    from tui.app import AppConfig, LadderApp
    from tui.cards import Catalog
    from tui.screens.chat import ChatScreen
    from tui.widgets.composer import Composer

    engine = Engine(policy=policy)
    sessions = Path(os.environ.get("TMPDIR", "/tmp")) / f"ladder-bench-{os.getpid()}"
    config = AppConfig(
        catalog=Catalog(),
        cards=cards,
        make_backend=engine.model,
        sessions_dir=sessions,
        params=greedy(tokens),
        engine_info={"schedule": policy, "cores": engine.cores},
    )
    app = LadderApp(config)

    async def key_latencies(composer: Composer, count: int) -> list[float]:
        """Seconds from a key press to the screen drawn with it: `wait_for_refresh` returns once
        the composer has handled the key and the screen has been refreshed after it."""
        results = []
        for n in range(count):
            char = "abcdefghij"[n % 10]
            start = time.perf_counter()
            composer.post_message(events.Key(char, char))
            await composer.wait_for_refresh()
            while not composer.text.endswith(char):  # not handled before that refresh: wait for the next
                await composer.wait_for_refresh()
            results.append(time.perf_counter() - start)
            await asyncio.sleep(TYPING_INTERVAL_S)
        return results

    async def until(condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async with app.run_test(size=(200, 50)):
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await until(lambda: all(pane.state == "ready" for pane in screen.panes.values()), timeout=60)
        composer = screen.query_one(Composer)
        composer.focus()
        idle = await key_latencies(composer, 10)
        composer.clear()
        screen.send_turn(STORY)
        # Until the first reply streams (or has already ended: a short one can be over between two looks).
        await until(lambda: any(pane.state not in ("ready", "thinking") for pane in screen.panes.values()), timeout=60)
        cpu, wall = time.process_time(), time.perf_counter()
        busy = await key_latencies(composer, 30)
        streaming = any(pane.state == "streaming" for pane in screen.panes.values())
        ui_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
        await screen.action_cancel_all()
    await engine.close()
    return {
        "key_latency_idle_ms": _percentiles(idle),
        "key_latency_streaming_ms": _percentiles(busy),
        "ui_cpu_share_of_one_core": ui_cpu,
        "still_streaming_at_end": streaming,
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": 1000 * statistics.median(ordered),
        "p95": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "max": 1000 * ordered[-1],
    }


# --- 5. start-up --------------------------------------------------------------------------------

STARTUP = """
import asyncio, sys, time
start = time.perf_counter()
{imports}
async def main():
    app = {make_app}
    async with app.run_test(size=(160, 40)) as pilot:
        while not {ready}:
            await asyncio.sleep(0.005)
        print(time.perf_counter() - start)
        {stop}
asyncio.run(main())
"""

LADDER_APP = dict(
    imports=(
        "from tui.cli import build_parser\n"
        "from tui.commands import chat\n"
        "from tui.app import LadderApp, AppConfig\n"
        "from tui.cards import load_catalog, select_models\n"
        "from tui.engine.local import Engine\n"
        "from tui import paths"
    ),
    make_app=(
        "LadderApp(AppConfig(catalog=load_catalog(), cards=select_models(load_catalog(), None, []), "
        "make_backend=Engine().model, sessions_dir=paths.sessions_dir()))"
    ),
    ready="(app.focused is not None and type(app.focused).__name__ == 'Composer')",
    stop="await app.session.close()",
)
MINIMAL_APP = dict(
    imports="from textual.app import App\nfrom textual.widgets import TextArea",
    make_app="type('Minimal', (App,), {'compose': lambda self: iter([TextArea()])})()",
    ready="(app.focused is not None or bool(app.query('TextArea')))",
    stop="pass",
)


def startup_time(kind: dict[str, str]) -> float:
    """Seconds from starting Python to the app being usable, in a fresh process. It runs in the
    temp folder: `python -c` puts its working folder first on the path, and from a checkout that
    would be the source tree's `tui/`, not the installed package (which has `tui.modelcards`)."""
    result = subprocess.run(
        [sys.executable, "-c", STARTUP.format(**kind)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "start-up failed")
    return float(result.stdout.strip().splitlines()[-1])


def startup(repeats: int = 3) -> dict[str, float]:
    ladder = statistics.median(startup_time(LADDER_APP) for _ in range(repeats))
    minimal = statistics.median(startup_time(MINIMAL_APP) for _ in range(repeats))
    return {"ladder_s": ladder, "minimal_textual_s": minimal, "ratio": ladder / minimal}
