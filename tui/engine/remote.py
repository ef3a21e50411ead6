"""Remote models: any OpenAI-compatible server (llama-server, vLLM, Ollama, LM Studio,
llama-cpp-python's own) as a pane, its replies streamed over HTTP by the `openai` client.

The work happens on the server, so a remote model takes no CPU lane here: it is a coroutine
on the app's event loop, reading server-sent events. A key is read from the environment
variable the card names, handed to the client, and scrubbed from every message we show.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from tui.cards import REMOTE_CONTEXT, CardError, Endpoint, ModelCard, Source, check_url
from tui.engine.base import ModelLoadError, State, stream_turn
from tui.engine.events import (
    FirstToken,
    Notice,
    PromptReady,
    SamplingParams,
    Status,
    TextPiece,
    TurnEvent,
    TurnRequest,
)
from tui.engine.reply import ReplyCounter, StreamedText
from tui.store import Progress

if TYPE_CHECKING:  # the client is imported when a remote model is first used (it takes 0.5 s)
    from openai import AsyncOpenAI

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
BUSY_WAITS = (1.0, 2.0, 4.0, 8.0)  # back-off before each retry of a 429 or 503, unless the server says
MAX_BUSY_WAIT = 30.0  # the longest Retry-After we honour
LOAD_PATIENCE = 120.0  # seconds a server may answer 503 while it loads its model (llama-server does)
# Sampling parameters the OpenAI API has, and those sent as the extra fields llama-server and
# vLLM read (vLLM calls the penalty repetition_penalty); an OpenAI-style server may refuse extras.
OPENAI_PARAMS = ("temperature", "top_p", "max_tokens", "seed")
EXTRA_PARAMS = {"top_k": ("top_k",), "min_p": ("min_p",), "repeat_penalty": ("repeat_penalty", "repetition_penalty")}


class RemoteError(Exception):
    """A server could not be used; the message says why and what to do."""


# --- endpoints and the models they serve ---------------------------------------------------------


def parse_endpoint(spec: str) -> tuple[str, str | None]:
    """`URL` or `URL#MODEL` (as given to --endpoint): the base URL and the model, if named."""
    url, _, model = spec.partition("#")
    try:
        check_url(url, "--endpoint")
    except CardError as error:
        raise RemoteError(str(error)) from None
    return url.rstrip("/"), model or None


def api_key(endpoint: Endpoint) -> str:
    if endpoint.api_key_env is None:
        return "none"  # the client needs some key; a server without keys ignores it
    key = os.environ.get(endpoint.api_key_env, "")
    if not key:
        raise RemoteError(
            f"the environment variable {endpoint.api_key_env} is not set: set it to the API key of {endpoint.host}"
        )
    return key


def make_client(endpoint: Endpoint) -> AsyncOpenAI:
    import httpx2
    import openai

    timeout = httpx2.Timeout(endpoint.stall_timeout, connect=CONNECT_TIMEOUT)
    # Retries are ours (see RemoteModel._open): each one is shown in the pane.
    return openai.AsyncOpenAI(base_url=endpoint.url, api_key=api_key(endpoint), max_retries=0, timeout=timeout)


async def list_models(url: str, api_key_env: str | None = None) -> list[dict[str, Any]]:
    """The entries of the server's `/v1/models`, as it gives them."""
    endpoint = Endpoint(url, "", api_key_env)
    client = make_client(endpoint)
    try:
        page = await client.models.list()
        return [entry.model_dump(exclude_none=True) for entry in page.data]
    except Exception as error:
        raise RemoteError(describe_failure(error, endpoint)) from None
    finally:
        await client.close()


def card_for(url: str, entry: dict[str, Any], api_key_env: str | None = None) -> ModelCard:
    """A card for one model a server lists: its size and context where the server says (llama-server's
    `meta`, vLLM's `max_model_len`), else guessed from its name, else unknown."""
    endpoint = Endpoint(url, str(entry["id"]), api_key_env)
    name = re.sub(r"\.gguf$", "", endpoint.model.rstrip("/").rsplit("/", 1)[-1], flags=re.IGNORECASE)
    meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
    params = _number(meta.get("n_params")) or params_from_name(name)
    quant = re.search(r"(?i)(?<![a-z0-9])(i?q\d[a-z0-9_]*|bf16|f16|fp16|f32|fp8|awq|gptq)(?![a-z0-9])", name)
    slug = re.sub(r"[^a-z0-9._-]+", "-", f"{name}-at-{endpoint.host}".lower()).strip("-._")
    return ModelCard(
        id=slug or "remote",
        name=f"{name} @ {endpoint.host}",
        family="remote",
        params=params,
        quant=quant.group(1) if quant else "?",
        size=_number(meta.get("size")),
        sha256=None,
        context=_number(entry.get("max_model_len")) or REMOTE_CONTEXT,
        sources=(Source(endpoint=endpoint),),
        origin=f"--endpoint {url}",
    )


def params_from_name(name: str) -> int | None:
    """ "Qwen2.5-7B-Instruct" -> 7e9, "SmolLM2-135M" -> 135e6; None without a size in the name."""
    found = re.search(r"(?i)(?<![a-z0-9.])(\d+(?:\.\d+)?)([mb])(?![a-z])", name)
    if not found:
        return None
    return round(float(found.group(1)) * (1e9 if found.group(2).lower() == "b" else 1e6))


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def endpoint_cards(spec: str, api_key_env: str | None = None) -> list[ModelCard]:
    """The cards of `--endpoint URL` (every model the server serves) or `URL#MODEL` (that one).
    Blocks while it asks the server; callable with or without an event loop running (`ladder ask`
    reads its options inside one), as it asks from a thread of its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, _endpoint_cards(spec, api_key_env)).result()


async def _endpoint_cards(spec: str, api_key_env: str | None) -> list[ModelCard]:
    url, model = parse_endpoint(spec)
    if model is not None:
        return [card_for(url, {"id": model}, api_key_env)]
    entries = await list_models(url, api_key_env)
    if not entries:
        raise RemoteError(f"the server at {url} serves no models; load one there, or name it as {url}#MODEL")
    return [card_for(url, entry, api_key_env) for entry in entries]


# --- failures, in words ---------------------------------------------------------------------------


def describe_failure(error: BaseException, endpoint: Endpoint) -> str:
    """What went wrong talking to the server, and what to do about it."""
    import httpx2
    import openai

    host = endpoint.host
    if isinstance(error, RemoteError):
        return str(error)
    if isinstance(error, (openai.APITimeoutError, httpx2.TimeoutException)):
        return (
            f"{host} sent nothing for {endpoint.stall_timeout:g} s, so the reply was stopped; if the model is slow "
            "to start, raise stall_timeout in its card"
        )
    if isinstance(error, openai.APIStatusError):
        message = _server_message(error)
        status = error.status_code
        if status in (401, 403):
            if endpoint.api_key_env:
                return f"{host} refused the key in {endpoint.api_key_env} ({status}: {message}); set it to a valid key"
            return (
                f"{host} wants an API key ({status}: {message}); name the variable that holds it with api_key_env "
                "in the model's card (or --api-key-env), and set it"
            )
        # llama-server's router answers 400 "model 'x' not found" where others answer 404
        if status == 404 or (status == 400 and "not found" in message.lower()):
            return (
                f"{host} has no model '{endpoint.model}' ({status}: {message}); see what it serves with "
                f"`ladder models list --endpoint {endpoint.url}`"
            )
        return f"{host} answered {status}: {message}"
    if isinstance(error, (openai.APIConnectionError, httpx2.TransportError)):
        return _connection_failure(error, endpoint)
    if isinstance(error, ValueError):  # an event that is not JSON, or not the shape of a chunk
        return f"{host} sent an event that is not an OpenAI chat chunk ({error}); is {endpoint.url} OpenAI-compatible?"
    return f"talking to {host} failed ({type(error).__name__}: {error})"


def _connection_failure(error: BaseException, endpoint: Endpoint) -> str:
    causes: list[str] = []
    cause: BaseException | None = error
    while cause is not None and len(causes) < 6:
        causes.append(f"{type(cause).__name__} {cause}")
        cause = cause.__cause__ or cause.__context__
    text = " ".join(causes).lower()
    host = endpoint.host
    if "refused" in text:
        return f"could not connect to {host}: connection refused; is the server running, and is {endpoint.url} right?"
    if any(word in text for word in ("name or service", "nodename", "name resolution", "getaddrinfo", "no address")):
        return f"could not find the host in {endpoint.url} (DNS lookup failed); check the host name"
    if any(word in text for word in ("ssl", "certificate", "tls")):
        return (
            f"the TLS handshake with {host} failed ({causes[-1]}); check the server's certificate, "
            "or use http:// if it does not speak TLS"
        )
    if any(word in text for word in ("peer closed", "incomplete", "remoteprotocol", "server disconnected", "reset")):
        return f"{host} closed the connection"
    return f"could not talk to {host} ({causes[-1]}); check that {endpoint.url} is an OpenAI-compatible server"


def _server_message(error: Any) -> str:
    """The server's own words: OpenAI's {"error": {"message"}} (the client has unwrapped "error"),
    FastAPI's {"detail"}, or a bare string (vLLM's {"error": "Unauthorized"})."""
    body = error.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body.get("error")
    if isinstance(body, str) and body:
        return body[:300]
    return str(error.message)[:300]


def _retry_wait(error: Any, attempt: int) -> float:
    """Seconds before retry `attempt` (from 0): the server's Retry-After if it gives one."""
    try:
        return min(float(error.response.headers.get("retry-after", "")), MAX_BUSY_WAIT)
    except ValueError:
        return BUSY_WAITS[min(attempt, len(BUSY_WAITS) - 1)]


# --- the backend ----------------------------------------------------------------------------------


class RemoteModel:
    """One model on an OpenAI-compatible server; see `tui.engine.base.Backend` for the interface."""

    def __init__(self, card: ModelCard) -> None:
        if card.endpoint is None:
            raise ValueError(f"{card.id} is not a remote model")
        self.card = card
        self.endpoint: Endpoint = card.endpoint
        self.state: State = "waiting"
        self.error: str | None = None
        self.n_ctx = card.context
        self.n_past = 0
        self.served: dict[str, Any] = {}  # the server's /v1/models entry for this model
        self._client: AsyncOpenAI | None = None
        self._key = ""
        self._task: asyncio.Task[None] | None = None
        self._refused_extras = False  # the server refused our extra sampling fields once

    async def load(self, progress: Progress | None = None) -> None:
        """Check that the server answers and serves this model (no progress: nothing downloads)."""
        self.state = "loading"
        try:
            self._key = api_key(self.endpoint) if self.endpoint.api_key_env else ""
            self._client = make_client(self.endpoint)
            self.served = await self._find_model()
        except Exception as error:
            self._fail(self._scrub(describe_failure(error, self.endpoint)))
            raise ModelLoadError(self.error) from None
        if self.closed():  # closed (the app quit, the model was removed) while the server was asked
            raise ModelLoadError(f"{self.card.name} was closed before it loaded")
        self.state = "ready"

    def closed(self) -> bool:
        """Whether `close` was called (a method: see LocalModel.closed)."""
        return self.state == "closed"

    async def _find_model(self) -> dict[str, Any]:
        import openai

        assert self._client is not None
        waited, attempt = 0.0, 0
        while True:
            try:
                page = await self._client.models.list()
                break
            except openai.APIStatusError as error:  # llama-server says 503 while it loads a model
                if error.status_code != 503 or waited >= LOAD_PATIENCE:
                    raise
                wait = _retry_wait(error, attempt)
                await asyncio.sleep(wait)
                waited, attempt = waited + wait, attempt + 1
        entries = {entry.id: entry.model_dump(exclude_none=True) for entry in page.data}
        if self.endpoint.model not in entries:
            served = ", ".join(sorted(entries)[:8]) or "nothing"
            raise RemoteError(f"{self.endpoint.host} does not serve '{self.endpoint.model}' (it serves: {served})")
        return entries[self.endpoint.model]

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.error = message

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        return stream_turn(self, lambda: self._start(request))

    def _start(self, request: TurnRequest) -> asyncio.Queue[TurnEvent]:
        """Start streaming the reply in a task of its own (so a cancel can stop it mid-read)."""
        self.state = "busy"
        queue: asyncio.Queue[TurnEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._reply(request, queue))
        return queue

    async def _reply(self, request: TurnRequest, queue: asyncio.Queue[TurnEvent]) -> None:
        """Stream one reply into `queue`, ending with its Finished whatever happens."""
        start = time.perf_counter()
        reply = ReplyCounter(start)
        text = StreamedText([])
        record: dict[str, Any] = {
            "endpoint": self.endpoint.host,
            "model": self.endpoint.model,
            "served": self.served,
            "tokens_counted_by": "client",  # "server" once its `usage` arrives
        }
        status: Status = "error"
        reason: str | None = "error"
        error: str | None = None
        try:
            stream = await self._open(request, record, queue)
            async with stream:
                reason = await self._read(stream, reply, text, record, queue)
            if reason is None:  # [DONE] without a finish reason: llama-cpp-python's server, interrupted
                raise RemoteError(f"{self.endpoint.host} ended the stream before the reply finished")
            if reason == "length" and record["tokens_counted_by"] == "client":
                # A chunk may hold several tokens (an emoji's bytes): at the limit the count is exact.
                reply.completion_tokens = request.params.max_tokens
                record["tokens_counted_by"] = "max_tokens"
            status = "done"
        except asyncio.CancelledError:
            status, reason = "cancelled", "cancelled"
        except Exception as failure:
            error = self._scrub(describe_failure(failure, self.endpoint))
            if reply.completion_tokens:
                error += f" mid-reply, after {reply.completion_tokens} tokens; the partial reply is kept"
        done = reply.finish(status, reason or "error", text.flush(), error)
        if self.state == "busy":
            self.state = "ready"
        queue.put_nowait(replace(done, remote=record))

    async def _open(self, request: TurnRequest, record: dict[str, Any], queue: asyncio.Queue[TurnEvent]) -> Any:
        """Start the streamed request; retries a busy server (429, 503) with a bounded back-off,
        each retry shown in the pane, and a server that refuses the extra sampling fields without them."""
        import openai

        assert self._client is not None
        params, attempt = request.params, 0
        while True:
            sent = {name: getattr(params, name) for name in OPENAI_PARAMS}
            extras = {} if self._refused_extras else _extra_fields(params)
            record["params_sent"] = sent | extras
            # The OpenAI API has no way to say a parameter was used: extras are recorded as unconfirmed.
            record["params_unconfirmed"] = sorted(name for name in EXTRA_PARAMS if not self._refused_extras)
            if self._refused_extras:
                record["params_refused"] = sorted(EXTRA_PARAMS)
            try:
                return await self._client.chat.completions.create(
                    model=self.endpoint.model,
                    messages=cast(Any, request.messages),
                    stream=True,
                    stream_options={"include_usage": True},
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_tokens,
                    seed=params.seed,
                    extra_body=extras,
                )
            except openai.BadRequestError as error:
                if extras and _refuses_extras(error):
                    self._refused_extras = True
                    continue
                raise
            except openai.APIStatusError as error:
                if error.status_code not in (429, 503) or attempt >= len(BUSY_WAITS):
                    raise
                wait = _retry_wait(error, attempt)
                attempt += 1
                queue.put_nowait(
                    Notice(
                        f"{self.endpoint.host} is busy ({error.status_code}): retrying in {wait:g} s "
                        f"(retry {attempt} of {len(BUSY_WAITS)})"
                    )
                )
                record["retries"] = attempt
                await asyncio.sleep(wait)

    async def _read(
        self,
        stream: Any,
        reply: ReplyCounter,
        text: StreamedText,
        record: dict[str, Any],
        queue: asyncio.Queue[TurnEvent],
    ) -> str | None:
        """Read the stream to its end; returns the finish reason the server gave, if any. Tokens are
        counted here, one per text chunk, until the server's own `usage` arrives (if it sends it)."""
        reason = None
        async for chunk in stream:
            if chunk.system_fingerprint:
                record["system_fingerprint"] = chunk.system_fingerprint
            if chunk.usage is not None:
                record["tokens_counted_by"] = "server"
                details = chunk.usage.prompt_tokens_details
                reply.prompt_tokens, reply.completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                reply.cached_tokens = (details.cached_tokens if details else None) or 0
                self.n_past = reply.prompt_tokens + reply.completion_tokens
                queue.put_nowait(PromptReady(reply.prompt_tokens, reply.cached_tokens))
            for choice in chunk.choices:
                piece = choice.delta.content if choice.delta else None
                if piece:
                    if reply.first_token is None:
                        reply.first_token = time.perf_counter()
                        queue.put_nowait(FirstToken(reply.first_token - reply.start))
                    if record["tokens_counted_by"] == "client":
                        reply.completion_tokens += 1
                    queue.put_nowait(TextPiece(text.add(piece.encode("utf-8"))[0], 1))
                reason = choice.finish_reason or reason
        return reason

    async def cancel(self) -> None:
        """Stop the reply in flight: closing its stream closes the connection, which tells the
        server to stop generating (llama-server and vLLM do)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # its cancelled Finished is queued by now

    async def reset(self) -> None:
        await self.cancel()  # the server keeps no conversation between requests
        self.n_past = 0

    async def close(self) -> None:
        await self.cancel()
        self.state = "closed"
        if self._client is not None:
            await self._client.close()
            self._client = None


def _extra_fields(params: SamplingParams) -> dict[str, Any]:
    return {field: getattr(params, name) for name, fields in EXTRA_PARAMS.items() for field in fields}


def _refuses_extras(error: Any) -> bool:
    """Whether a 400 is the server refusing fields it does not know (api.openai.com does)."""
    message = _server_message(error).lower()
    return (
        "unrecognized" in message
        or "extra" in message
        or any(field in message for fields in EXTRA_PARAMS.values() for field in fields)
    )
