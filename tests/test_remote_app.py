"""Remote panes end to end against llama-cpp-python's own server (tests/servers.py) on 127.0.0.1: the chat app
driven by the pilot with SmolLM2-135M run locally beside the same model served remotely, `ladder ask` and
`ladder models list --endpoint` as subprocesses, and an API key that must never reach a file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from chat_app import answered, errors_in, loaded, reply_text, send, transcript_events
from servers import MODEL_ALIAS, LlamaServer, free_port
from waiting import until, wait_for

from tui.app import AppConfig, LadderApp
from tui.cards import ModelCard, load_catalog
from tui.engine.base import Backend
from tui.engine.endpoints import endpoint_cards
from tui.engine.events import SamplingParams
from tui.engine.local import Engine
from tui.engine.remote import RemoteModel
from tui.export import to_markdown
from tui.history import load_record

SMOL = "smollm2-135m-instruct"
KEY_VAR = "LADDER_TEST_KEY"
GREEDY = SamplingParams(temperature=0.0, seed=3, max_tokens=24)
COUNTING = "Count from 1 to 300, one number per line."


def remote_app(tmp_path: Path, server: LlamaServer, params: SamplingParams, local: bool = True) -> LadderApp:
    """The app as `ladder --model smollm2-135m-instruct --endpoint URL` builds it (tui/commands/chat.py):
    local cards run by the engine, remote ones by RemoteModel."""
    catalog = load_catalog()
    engine = Engine()
    remote = endpoint_cards(server.url)
    catalog.cards.update({card.id: card for card in remote})
    cards = [*([catalog.cards[SMOL]] if local else []), *remote]

    def backend(card: ModelCard) -> Backend:
        return RemoteModel(card) if card.endpoint else engine.model(card)

    config = AppConfig(
        catalog=catalog, cards=cards, make_backend=backend, sessions_dir=tmp_path / "sessions", params=params
    )
    return LadderApp(config)


def remote_id(app: LadderApp) -> str:
    [model] = [model for model in app.session.models if model.card.endpoint]
    return model.card.id


def host_of(server: LlamaServer) -> str:
    return f"127.0.0.1:{server.port}"


def replies(events: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    """The last reply event of each model, by model id."""
    return {event["model"]: event for event in events if event["type"] == "reply"}


# --- the chat app ----------------------------------------------------------------------------------


@pytest.mark.model
async def test_local_and_remote_panes_answer_one_turn_alike_with_stats_transcript_and_export(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    app = remote_app(tmp_path, llama_server, GREEDY)
    host = host_of(llama_server)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot, timeout=60)
        remote = remote_id(app)
        local_pane, remote_pane = screen.panes[SMOL], screen.panes[remote]
        assert local_pane.state == remote_pane.state == "ready", errors_in(local_pane) + errors_in(remote_pane)
        assert list(screen.panes) == [SMOL, remote]  # size order: 134.5M local, "135m" from the server's name
        assert f"served by {host}" in str(remote_pane.header.render())
        await send(pilot, "What is the capital of France?")
        await until(
            pilot, lambda: answered(local_pane, 1) and answered(remote_pane, 1), timeout=90, what="both replies"
        )
        assert local_pane.state == "done", errors_in(local_pane)
        assert remote_pane.state == "done", errors_in(remote_pane)
        local_text, remote_text = reply_text(local_pane, 1).strip(), reply_text(remote_pane, 1).strip()
        # The same model, greedy, the same prompt through the same chat template: the same words.
        assert remote_text and remote_text == local_text
        footer = str(remote_pane.footer.render())
        assert "TTFT " in footer and " t/s" in footer, footer
        stats = str(remote_pane.turn_view(1).stats.render())
        path = app.session.transcript.path
    events = transcript_events(app)
    header = events[0]
    assert {"host": host, "model": MODEL_ALIAS} in [card.get("endpoint") for card in header["models"]]
    reply = replies(events)[remote]
    assert reply["status"] == "done" and reply["text"] == remote_text
    record = reply["remote"]
    assert record["endpoint"] == host and record["model"] == MODEL_ALIAS
    assert record["served"]["id"] == MODEL_ALIAS
    # llama_cpp.server sends no usage: tokens are counted here ("~N tok"), exact only at the max_tokens limit.
    counted_by = {"stop": "client", "length": "max_tokens"}[reply["finish_reason"]]
    assert record["tokens_counted_by"] == counted_by
    assert (f"~{reply['completion_tokens']} tok" in stats) == (counted_by == "client"), stats
    assert record["params_sent"]["temperature"] == 0.0 and record["params_sent"]["max_tokens"] == 24
    assert reply["ttft_s"] > 0 and reply["tokens_per_s"] > 0 and reply["completion_tokens"] > 0
    markdown = to_markdown(load_record(path))
    assert f"| {MODEL_ALIAS} @ {host} | remote | 135M | ? | ? | served by {host} |" in markdown  # the lineup
    remote_section = markdown.split(f"### {MODEL_ALIAS} @ {host} (135M)")[1]
    assert remote_text.splitlines()[0] in remote_section


@pytest.mark.model
async def test_escape_cancels_a_long_remote_reply_within_half_a_second_and_the_server_stops(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    app = remote_app(tmp_path, llama_server, replace(GREEDY, max_tokens=600), local=False)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await loaded(pilot, timeout=30)
        pane = screen.panes[remote_id(app)]
        disconnects, generations = llama_server.disconnects(), len(llama_server.eval_runs())
        await send(pilot, COUNTING)
        await until(pilot, lambda: pane.live_tokens >= 10, timeout=60, what="the remote reply streaming")
        pressed = time.perf_counter()
        await pilot.press("escape")
        await until(pilot, lambda: pane.state == "cancelled", timeout=5, what="the remote pane cancelled")
        took = time.perf_counter() - pressed
        assert took < 0.5, f"the pane showed cancelled {took:.2f} s after Esc"
        assert str(pane.turn_view(1).stats.render()).startswith("cancelled · ~")  # counted here, as it streamed
        await until(
            pilot, lambda: llama_server.disconnects() > disconnects, timeout=10, what="the server's 'Disconnected'"
        )
        app.session.change_settings(params=replace(GREEDY, max_tokens=12))
        await send(pilot, "Say hello.")
        await until(pilot, lambda: answered(pane, 2), timeout=60, what="the second reply")
        assert pane.state == "done" and reply_text(pane, 2).strip(), errors_in(pane)
    first, second = [event for event in transcript_events(app) if event["type"] == "reply"]
    assert first["status"] == "cancelled" and first["text"] and 10 <= first["completion_tokens"] < 600
    assert second["status"] == "done" and 0 < second["completion_tokens"] <= 12
    # The server logs the timings of each generation that ran to its end: only the second one did. Had the
    # cancelled one gone on, it would have come first (requests wait their turn), with up to 600 runs.
    wait_for(lambda: len(llama_server.eval_runs()) > generations, what="the server's timings of the second reply")
    [runs] = llama_server.eval_runs()[generations:]
    assert runs <= 12


@pytest.mark.model
async def test_a_server_killed_mid_stream_fails_only_its_pane_and_keeps_the_partial_reply(
    tmp_path: Path, start_llama_server: Callable[..., LlamaServer]
) -> None:
    server = start_llama_server()
    host = host_of(server)
    app = remote_app(tmp_path, server, replace(GREEDY, max_tokens=60))
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await loaded(pilot, timeout=60)
        remote = remote_id(app)
        local_pane, remote_pane = screen.panes[SMOL], screen.panes[remote]
        await send(pilot, COUNTING)
        await until(pilot, lambda: remote_pane.live_tokens >= 3, timeout=60, what="the remote reply streaming")
        server.kill()
        await until(pilot, lambda: answered(remote_pane, 1), timeout=30, what="the remote pane failing")
        await until(pilot, lambda: answered(local_pane, 1), timeout=90, what="the local reply")
        assert remote_pane.state == "error"
        error = errors_in(remote_pane)
        assert host in error and "partial reply is kept" in error, error
        partial = reply_text(remote_pane, 1).strip()
        assert partial
        assert local_pane.state == "done" and reply_text(local_pane, 1).strip(), errors_in(local_pane)
    saved = replies(transcript_events(app))
    assert saved[SMOL]["status"] == "done" and saved[SMOL]["text"]
    assert saved[remote]["status"] == "error" and saved[remote]["text"] == partial
    assert host in saved[remote]["error"]


# --- the command line ------------------------------------------------------------------------------


def ladder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`ladder ARGS` in a process of its own, as tests/test_ask.py runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ if env is None else env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def saved_replies(sessions: Path) -> list[dict]:  # type: ignore[type-arg]
    [transcript] = sessions.glob("*.jsonl")
    return [event for event in map(json.loads, transcript.read_text().splitlines()) if event["type"] == "reply"]


@pytest.mark.model
def test_ask_with_an_endpoint_prints_and_saves_the_local_and_the_remote_reply(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    sessions = tmp_path / "s"
    result = ladder(
        "ask",
        "--model",
        SMOL,
        "--endpoint",
        llama_server.url,
        "--temperature",
        "0",
        "--max-tokens",
        "20",
        "--sessions-dir",
        str(sessions),
        "What is two plus two?",
    )
    assert result.returncode == 0, result.stderr
    host = host_of(llama_server)
    labels = {line.split(" │ ")[0].strip() for line in result.stdout.splitlines() if " │ " in line}
    assert labels == {"SmolLM2 135M Instruct", f"{MODEL_ALIAS} @ {host}"}, result.stdout
    saved = {reply["model"]: reply for reply in saved_replies(sessions)}
    [remote] = [reply for model, reply in saved.items() if model != SMOL]
    assert saved[SMOL]["status"] == "done" and saved[SMOL]["text"]
    assert remote["status"] == "done" and remote["text"] and remote["remote"]["endpoint"] == host
    assert remote["text"].split()[0] in result.stdout


@pytest.mark.model
def test_models_list_with_an_endpoint_lists_what_the_server_serves(llama_server: LlamaServer) -> None:
    result = ladder("models", "list", "--endpoint", llama_server.url)
    assert result.returncode == 0, result.stderr
    assert f"{llama_server.url}: 1 model(s)" in result.stdout
    assert any(line.startswith(MODEL_ALIAS + " ") for line in result.stdout.splitlines()), result.stdout


def test_an_endpoint_on_a_closed_port_is_refused_in_one_line_before_any_model_loads(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = ladder("ask", "--model", SMOL, "--endpoint", url, "--sessions-dir", str(tmp_path / "s"), "Hi")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()  # no "loading", no traceback
    assert line.startswith(f"ladder: --endpoint {url}: ") and "connection refused" in line, line
    assert result.stdout == "" and not (tmp_path / "s").exists()


# --- an API key ------------------------------------------------------------------------------------

KEY = "sk-test-5f3a9c0e7b2d4186"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A server that wants `Authorization: Bearer KEY`, shared by the key tests."""
    with LlamaServer(tmp_path_factory.mktemp("keyed-server"), api_key=KEY) as server:
        yield server


def ask_with_key(endpoint: str, key: str | None, sessions: Path) -> subprocess.CompletedProcess[str]:
    """`ladder ask --endpoint ENDPOINT --api-key-env LADDER_TEST_KEY` with the variable set to `key` (None: unset)."""
    env = {name: value for name, value in os.environ.items() if name != KEY_VAR}
    if key is not None:
        env[KEY_VAR] = key
    options = ["--model", SMOL, "--endpoint", endpoint, "--api-key-env", KEY_VAR, "--sessions-dir", str(sessions)]
    return ladder("ask", *options, "--temperature", "0", "--max-tokens", "8", "Hi there", env=env)


def files_holding(text: str, *folders: Path) -> set[Path]:
    return {path for folder in folders for path in folder.rglob("*") if path.is_file() and holds(path, text.encode())}


def holds(path: Path, needle: bytes) -> bool:
    """Whether the file holds `needle`, read a megabyte at a time (the model cache holds large files)."""
    with path.open("rb") as file:
        tail = b""
        while chunk := file.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


@pytest.mark.model
def test_an_api_key_from_its_variable_is_used_and_written_to_no_file(tmp_path: Path, keyed_server: LlamaServer) -> None:
    sessions = tmp_path / "s"
    result = ask_with_key(keyed_server.url, KEY, sessions)
    assert result.returncode == 0, result.stderr
    [reply] = [reply for reply in saved_replies(sessions) if reply["model"] != SMOL]
    assert reply["status"] == "done" and reply["text"]
    assert KEY not in result.stdout + result.stderr
    [transcript] = sessions.glob("*.jsonl")
    exports = tmp_path / "exports"
    exports.mkdir()
    for kind in ("md", "html", "json"):
        target = exports / f"session.{kind}"
        exported = ladder("sessions", "export", transcript.stem, "-o", str(target), "--sessions-dir", str(sessions))
        assert exported.returncode == 0 and target.stat().st_size > 0, exported.stderr
        assert KEY not in exported.stdout + exported.stderr
    assert f"served by {host_of(keyed_server)}" in (exports / "session.md").read_text()
    # Every file of the test: sessions, exports, config and data (XDG_*), the working folder; and the model cache.
    assert files_holding(KEY, tmp_path, Path(os.environ["XDG_CACHE_HOME"])) == set()
    # The same search finds what the files do hold: a word of the reply, in the transcript and every export.
    word = max(re.findall(r"[A-Za-z]+", reply["text"]), key=len)
    assert files_holding(word, tmp_path) >= {transcript, *exports.iterdir()}


@pytest.mark.model
def test_a_missing_or_wrong_api_key_is_refused_naming_its_variable(tmp_path: Path, keyed_server: LlamaServer) -> None:
    missing = ask_with_key(keyed_server.url, None, tmp_path / "s")
    assert missing.returncode == 2
    [line] = missing.stderr.splitlines()
    assert line.startswith("ladder: ") and f"{KEY_VAR} is not set" in line, line

    wrong = ask_with_key(keyed_server.url, "sk-wrong-key", tmp_path / "s")
    assert wrong.returncode == 2
    [line] = wrong.stderr.splitlines()
    assert line.startswith("ladder: ") and f"refused the key in {KEY_VAR} (401" in line, line
    assert not (tmp_path / "s").exists()  # refused before any model loaded or session began

    # Naming the model skips asking the server at start: its pane fails to load, the local model answers.
    in_pane = ask_with_key(f"{keyed_server.url}#{MODEL_ALIAS}", "sk-wrong-key", tmp_path / "s")
    assert in_pane.returncode == 1 and "Traceback" not in in_pane.stderr
    assert f"refused the key in {KEY_VAR} (401" in in_pane.stderr, in_pane.stderr
    assert in_pane.stderr.splitlines()[-1] == "ladder: 1 of 2 models answered"
    assert files_holding("sk-wrong-key", tmp_path) == set()
