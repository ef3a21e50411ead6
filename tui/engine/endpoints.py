"""Servers: endpoints as given to --endpoint, the models a server lists (as cards), the client
that talks to one, and what went wrong talking to it, in words. The remote backend (`remote.py`)
and its scoring (`remote_score.py`) build on these."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
from typing import TYPE_CHECKING, Any

from tui.cards import REMOTE_CONTEXT, ModelCard
from tui.sources import CardError, Endpoint, Source, check_url

if TYPE_CHECKING:  # the client is imported when a remote model is first used (it takes 0.5 s)
    from openai import AsyncOpenAI

CONNECT_TIMEOUT = 10.0  # seconds to open a connection


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
        message = server_message(error)
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


def server_message(error: Any) -> str:
    """The server's own words: OpenAI's {"error": {"message"}} (the client has unwrapped "error"),
    FastAPI's {"detail"}, or a bare string (vLLM's {"error": "Unauthorized"})."""
    body = error.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body.get("error")
    if isinstance(body, str) and body:
        return body[:300]
    return str(error.message)[:300]
