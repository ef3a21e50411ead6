"""Remote models: any OpenAI-compatible server (llama-server, vLLM, Ollama, LM Studio,
llama-cpp-python's own) as a pane, its replies streamed over HTTP by the `openai` client:
chat requests from `/v1/chat/completions`, completion-form requests (raw text, no chat template)
from `/v1/completions`, which also scores continuations where the server echoes prompt log-probs.

The work happens on the server, so a remote model takes no CPU lane here: it is a coroutine
on the app's event loop, reading server-sent events. A key is read from the environment
variable the card names, handed to the client, and scrubbed from every message we show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from tui.cards import ModelCard
from tui.engine.base import ModelLoadError, State, stream_turn
from tui.engine.decode import TOP_ALTERNATIVES, TokenRecord
from tui.engine.endpoints import RemoteError, api_key, describe_failure, make_client, server_message
from tui.engine.events import (
    FirstToken,
    Notice,
    PromptReady,
    SamplingParams,
    Scores,
    Status,
    TextPiece,
    TurnEvent,
    TurnRequest,
)
from tui.engine.remote_score import CHAT_NOT_SCORED, EchoScorer
from tui.engine.reply import ReplyCounter, StreamedText
from tui.sources import Endpoint
from tui.store import Progress

if TYPE_CHECKING:  # the client is imported when a remote model is first used (it takes 0.5 s)
    from openai import AsyncOpenAI

BUSY_WAITS = (1.0, 2.0, 4.0, 8.0)  # back-off before each retry of a 429 or 503, unless the server says
MAX_BUSY_WAIT = 30.0  # the longest Retry-After we honour
LOAD_PATIENCE = 120.0  # seconds a server may answer 503 while it loads its model (llama-server does)
# Sampling parameters the OpenAI API has, and those sent as the extra fields llama-server and
# vLLM read (vLLM calls the penalty repetition_penalty); an OpenAI-style server may refuse extras.
OPENAI_PARAMS = ("temperature", "top_p", "max_tokens", "seed")
EXTRA_PARAMS = {"top_k": ("top_k",), "min_p": ("min_p",), "repeat_penalty": ("repeat_penalty", "repetition_penalty")}


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
        self._task: asyncio.Task[Any] | None = None  # the turn or scoring in flight
        self._refused_extras = False  # the server refused our extra sampling fields once
        self._scorer = EchoScorer(self.endpoint.host, self._complete, self._describe)

    async def load(self, progress: Progress | None = None) -> None:
        """Check that the server answers and serves this model (no progress: nothing downloads)."""
        self.state = "loading"
        try:
            self._key = api_key(self.endpoint) if self.endpoint.api_key_env else ""
            self._client = make_client(self.endpoint)
            self.served = await self._find_model()
        except Exception as error:
            self._fail(self._describe(error))
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

    def _describe(self, failure: BaseException) -> str:
        """What went wrong (see `describe_failure`), the key scrubbed from the server's words."""
        text = describe_failure(failure, self.endpoint)
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
        probs = TokenRecord() if request.logprobs else None
        try:
            stream = await self._open(request, record, queue)
            async with stream:
                reason = await self._read(stream, reply, text, record, queue, probs)
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
            error = self._describe(failure)
            if reply.completion_tokens:
                error += f" mid-reply, after {reply.completion_tokens} tokens; the partial reply is kept"
        if probs is not None and reply.completion_tokens and not probs.tokens:
            missing = f"{self.endpoint.host} returned no token probabilities: this server does not give them"
            reply.notices.append(missing)
            queue.put_nowait(Notice(missing))
            probs = None
        done = reply.finish(status, reason or "error", text.flush(), error)
        if self.state == "busy":
            self.state = "ready"
        queue.put_nowait(replace(done, remote=record, tokens=probs.tokens if probs else None))

    async def _open(self, request: TurnRequest, record: dict[str, Any], queue: asyncio.Queue[TurnEvent]) -> Any:
        """Start the streamed request; retries a busy server (see `_busy_retried`), each retry shown in
        the pane, and a server that refuses the extra sampling fields without them."""
        import openai

        def retrying(message: str, attempt: int) -> None:
            queue.put_nowait(Notice(message))
            record["retries"] = attempt

        while True:
            sent = {name: getattr(request.params, name) for name in OPENAI_PARAMS}
            extras = {} if self._refused_extras else _extra_fields(request.params)
            record["params_sent"] = sent | extras
            # The OpenAI API has no way to say a parameter was used: extras are recorded as unconfirmed.
            record["params_unconfirmed"] = sorted(name for name in EXTRA_PARAMS if not self._refused_extras)
            if self._refused_extras:
                record["params_refused"] = sorted(EXTRA_PARAMS)
            try:
                return await self._busy_retried(partial(self._create_stream, request, sent, extras), retrying)
            except openai.BadRequestError as error:
                if extras and _refuses_extras(error):
                    self._refused_extras = True
                    continue
                raise

    def _create_stream(self, request: TurnRequest, sent: dict[str, Any], extras: dict[str, Any]) -> Awaitable[Any]:
        """The streamed request: a chat, or for the completion form the raw text continued."""
        assert self._client is not None
        fields: dict[str, Any] = {"model": self.endpoint.model, "stream": True, "extra_body": extras}
        fields |= sent | {"stream_options": {"include_usage": True}}
        if request.stop:
            fields["stop"] = list(request.stop)
        if request.completion is not None:
            if request.logprobs:
                fields["logprobs"] = TOP_ALTERNATIVES
            return self._client.completions.create(prompt=request.completion, **fields)
        if request.logprobs:
            fields |= {"logprobs": True, "top_logprobs": TOP_ALTERNATIVES}
        return self._client.chat.completions.create(messages=cast(Any, request.messages), **fields)

    async def _busy_retried(
        self, call: Callable[[], Awaitable[Any]], retrying: Callable[[str, int], None] | None = None
    ) -> Any:
        """`call()`, retried while the server says it is busy (429, 503) with a bounded back-off;
        `retrying` hears of each retry (its message and number)."""
        import openai

        attempt = 0
        while True:
            try:
                return await call()
            except openai.APIStatusError as error:
                if error.status_code not in (429, 503) or attempt >= len(BUSY_WAITS):
                    raise
                wait = _retry_wait(error, attempt)
                attempt += 1
                if retrying is not None:
                    retrying(
                        f"{self.endpoint.host} is busy ({error.status_code}): retrying in {wait:g} s "
                        f"(retry {attempt} of {len(BUSY_WAITS)})",
                        attempt,
                    )
                await asyncio.sleep(wait)

    async def _read(
        self,
        stream: Any,
        reply: ReplyCounter,
        text: StreamedText,
        record: dict[str, Any],
        queue: asyncio.Queue[TurnEvent],
        probs: TokenRecord | None,
    ) -> str | None:
        """Read the stream to its end; returns the finish reason the server gave, if any. Tokens are
        counted here, one per text chunk, until the server's own `usage` arrives (if it sends it); with
        `probs`, their log-probabilities are kept where the server sends them."""
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
                if probs is not None:
                    _keep_logprobs(choice, probs)
                piece = _piece(choice)
                if piece:
                    if reply.first_token is None:
                        reply.first_token = time.perf_counter()
                        queue.put_nowait(FirstToken(reply.first_token - reply.start))
                    if record["tokens_counted_by"] == "client":
                        reply.completion_tokens += 1
                    queue.put_nowait(TextPiece(text.add(piece.encode("utf-8"))[0], 1))
                reason = choice.finish_reason or reason
        return reason

    async def score(self, request: TurnRequest, continuations: list[str]) -> Scores:
        """Each continuation's token log-probs after a completion-form prompt (see `tui.engine.remote_score`)."""
        if request.completion is None:
            return Scores("unavailable", error=CHAT_NOT_SCORED)
        if self.state != "ready":
            why = self.error if self.state == "error" else f"it is {self.state}"
            return Scores("error", error=f"{self.card.name} cannot score: {why}")
        self.state = "busy"
        task = asyncio.create_task(self._scorer.score(request.completion, continuations))
        self._task = task  # a task of its own, so that `cancel` can stop it mid-request
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:  # our caller was cancelled: stop the requests too
            task.cancel()
            raise
        finally:
            if self.state == "busy":
                self.state = "ready"
        return task.result()

    def _complete(self, **fields: Any) -> Awaitable[Any]:
        """One `/v1/completions` request (not streamed) with `fields`, retried while the server is busy."""
        assert self._client is not None
        client = self._client
        return self._busy_retried(lambda: client.completions.create(model=self.endpoint.model, **fields))

    async def cancel(self) -> None:
        """Stop the reply or scoring in flight: closing its stream closes the connection, which tells the
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


def _piece(choice: Any) -> str | None:
    """The text a streamed choice adds: a chat chunk's delta, or a completion chunk's text."""
    delta = getattr(choice, "delta", None)
    return cast("str | None", delta.content if delta is not None else getattr(choice, "text", None))


def _keep_logprobs(choice: Any, probs: TokenRecord) -> None:
    """The tokens a streamed choice carries with their log-probabilities, if the server sent them: a chat
    chunk's `logprobs.content`, or a completion chunk's `logprobs.tokens` beside `token_logprobs` and
    `top_logprobs` (llama-cpp-python's server, for one, gives the chosen token among its alternatives)."""
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is None:
        return
    if getattr(logprobs, "content", None) is not None:  # a chat chunk
        for item in logprobs.content:
            if item.logprob is not None:
                top = [(_token_bytes(other), other.logprob) for other in item.top_logprobs or []]
                probs.add(_token_bytes(item), item.logprob, _likeliest(top))
        return
    tokens = getattr(logprobs, "tokens", None) or []
    chosen = getattr(logprobs, "token_logprobs", None) or []
    tops = getattr(logprobs, "top_logprobs", None) or [None] * len(tokens)
    for token, logprob, top in zip(tokens, chosen, tops, strict=False):
        if logprob is not None:
            alternatives = [(text.encode("utf-8"), p) for text, p in (top or {}).items()]
            probs.add(token.encode("utf-8"), logprob, _likeliest(alternatives))


def _token_bytes(item: Any) -> bytes:
    """A token's bytes as a server gives them (exact, where a character spans tokens), else its text."""
    return bytes(item.bytes) if item.bytes else str(item.token).encode("utf-8")


def _likeliest(alternatives: list[tuple[bytes, float]]) -> list[tuple[bytes, float]]:
    return sorted(alternatives, key=lambda alternative: -alternative[1])[:TOP_ALTERNATIVES]


def _extra_fields(params: SamplingParams) -> dict[str, Any]:
    return {field: getattr(params, name) for name, fields in EXTRA_PARAMS.items() for field in fields}


def _refuses_extras(error: Any) -> bool:
    """Whether a 400 is the server refusing fields it does not know (api.openai.com does)."""
    message = server_message(error).lower()
    return (
        "unrecognized" in message
        or "extra" in message
        or any(field in message for fields in EXTRA_PARAMS.values() for field in fields)
    )
