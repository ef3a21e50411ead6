"""The remote backend (tui/engine/remote.py) against real sockets: llama-cpp-python's own server on SmolLM2-135M
for real replies and cancels, and the scripted server of tests/servers.py for usage, errors and odd streams."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from servers import MODEL_ALIAS, Connect, LlamaServer, ScriptedServer, error, free_port, stream, text_chunks
from waiting import eventually

from tui.cards import ModelCard
from tui.engine import remote
from tui.engine.base import ModelLoadError
from tui.engine.endpoints import RemoteError, card_for, endpoint_cards, list_models, parse_endpoint
from tui.engine.events import (
    Finished,
    FirstToken,
    Notice,
    PromptReady,
    SamplingParams,
    TextPiece,
    TurnEvent,
    TurnRequest,
)
from tui.engine.remote import RemoteModel

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, seed=1)
KEY_ENV = "LADDER_TEST_REMOTE_KEY"
KEY = "sk-secret-123"
TURN_TIMEOUT = 20.0  # seconds a whole turn may take before the test fails instead of hanging

pytestmark = pytest.mark.usefixtures("short_back_off")


def card(url: str, model: str = "tiny", api_key_env: str | None = None, stall_timeout: float = 0.0) -> ModelCard:
    """A card for `model` at `url`, as `--endpoint` makes it; with its own stall_timeout if given."""
    made = card_for(url, {"id": model}, api_key_env)
    if not stall_timeout:
        return made
    endpoint = replace(made.sources[0].endpoint, stall_timeout=stall_timeout)
    return replace(made, sources=(replace(made.sources[0], endpoint=endpoint),))


def host(server: ScriptedServer) -> str:
    return urlsplit(server.url).netloc


def ask(text: str, params: SamplingParams = GREEDY) -> TurnRequest:
    return TurnRequest([{"role": "user", "content": text}], params)


async def collect(model: RemoteModel, request: TurnRequest) -> list[TurnEvent]:
    async def events() -> list[TurnEvent]:
        return [event async for event in model.turn(request)]

    return await asyncio.wait_for(events(), TURN_TIMEOUT)


def last(events: list[TurnEvent]) -> Finished:
    assert isinstance(events[-1], Finished), events
    return events[-1]


def pieces(events: list[TurnEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextPiece)]


async def load_error(connect: Connect, made: ModelCard) -> str:
    with pytest.raises(ModelLoadError) as failure:
        await asyncio.wait_for(connect(made), TURN_TIMEOUT)
    return str(failure.value)


async def turn_error(connect: Connect, made: ModelCard) -> Finished:
    done = last(await collect(await connect(made), ask("Hi")))
    assert done.status == "error" and done.error, done
    return done


# --- the real llama server -------------------------------------------------------------------------


@pytest.mark.model
async def test_a_turn_against_llama_server_streams_first_token_then_pieces_then_finished_counted_by_the_client(
    llama_server: LlamaServer, connect: Connect
) -> None:
    model = await connect(card(llama_server.url, MODEL_ALIAS))
    events = await collect(model, ask("Say hello.", replace(GREEDY, max_tokens=64)))  # ~28 tokens, then it stops
    done = last(events)
    assert isinstance(events[0], FirstToken) and events[0].ttft_s > 0
    assert all(isinstance(event, TextPiece) for event in events[1:-1]) and len(events) > 3
    assert (done.status, done.finish_reason) == ("done", "stop")
    assert done.text and done.text == "".join(pieces(events)).strip()
    assert done.completion_tokens == len(pieces(events))
    assert done.ttft_s is not None and done.ttft_s > 0
    assert done.tokens_per_s is not None and done.tokens_per_s > 0
    assert done.remote is not None
    assert done.remote["tokens_counted_by"] == "client"  # llama_cpp.server sends no usage
    assert (done.remote["endpoint"], done.remote["model"]) == (f"127.0.0.1:{llama_server.port}", MODEL_ALIAS)
    assert done.remote["served"]["id"] == MODEL_ALIAS
    assert "system_fingerprint" not in done.remote  # it sends none
    assert model.state == "ready"


@pytest.mark.model
async def test_cancel_against_llama_server_finishes_within_half_a_second_and_the_server_stops_generating(
    llama_server: LlamaServer, connect: Connect
) -> None:
    model = await connect(card(llama_server.url, MODEL_ALIAS))
    disconnects, finished_runs = llama_server.disconnects(), len(llama_server.eval_runs())
    events: list[tuple[float, TurnEvent]] = []

    async def consume() -> None:
        long = ask("Count from 1 to 300, separated by commas.", SamplingParams(temperature=0.0, max_tokens=600))
        async for event in model.turn(long):
            events.append((time.perf_counter(), event))

    consumer = asyncio.create_task(consume())
    await eventually(lambda: sum(isinstance(event, TextPiece) for _, event in events) >= 3, what="three pieces")
    cancelled_at = time.perf_counter()
    await model.cancel()
    await asyncio.wait_for(consumer, 5)

    finished_at, done = events[-1]
    assert isinstance(done, Finished) and (done.status, done.finish_reason) == ("cancelled", "cancelled")
    assert finished_at - cancelled_at < 0.5
    assert done.text and done.text == "".join(pieces([event for _, event in events])).strip()
    await eventually(lambda: llama_server.disconnects() > disconnects, what="the server's 'Disconnected' line")

    again = last(await collect(model, ask("Say hi.", replace(GREEDY, max_tokens=8))))
    assert again.status == "done" and again.text
    # Requests wait their turn there: had the cancelled one gone on, its ~600-token run would be logged first.
    new_runs = llama_server.eval_runs()[finished_runs:]
    assert len(new_runs) == 1 and new_runs[0] <= 8, new_runs


# --- sampling and usage ----------------------------------------------------------------------------


async def test_the_sampling_fields_are_sent_with_the_requests_values_and_recorded_as_sent_and_unconfirmed(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    params = SamplingParams(
        temperature=0.3,
        top_p=0.8,
        top_k=17,
        min_p=0.07,
        repeat_penalty=1.3,
        max_tokens=33,
        seed=42,
    )
    done = last(await collect(await connect(card(scripted_server.url)), ask("Hi", params)))
    assert done.status == "done"
    body = scripted_server.chat_requests[0].body
    sent = {"temperature": 0.3, "top_p": 0.8, "max_tokens": 33, "seed": 42, "top_k": 17, "min_p": 0.07}
    sent |= {"repeat_penalty": 1.3, "repetition_penalty": 1.3}
    assert {name: body.get(name) for name in sent} == sent
    assert (body["model"], body["stream"], body["stream_options"]) == ("tiny", True, {"include_usage": True})
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert done.remote is not None
    assert done.remote["params_sent"] == sent
    assert done.remote["params_unconfirmed"] == ["min_p", "repeat_penalty", "top_k"]
    assert "params_refused" not in done.remote


async def test_usage_from_the_server_gives_the_counts_a_prompt_ready_and_the_system_fingerprint(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    # Two pieces but three tokens: the count must come from the server, not from counting pieces.
    scripted_server.script(stream(text_chunks(["Hel", "lo"], usage=usage, system_fingerprint="fp_scripted")))
    model = await connect(card(scripted_server.url))
    events = await collect(model, ask("Hi"))
    done = last(events)
    assert (done.status, done.finish_reason, done.text) == ("done", "stop", "Hello")
    assert (done.prompt_tokens, done.completion_tokens) == (11, 3)
    assert PromptReady(11, 0) in events
    assert done.remote is not None
    assert done.remote["tokens_counted_by"] == "server"
    assert done.remote["system_fingerprint"] == "fp_scripted"
    assert model.n_past == 14


async def test_a_reply_cut_at_max_tokens_without_usage_counts_max_tokens(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    # Two chunks but five tokens: a chunk may hold several tokens, so at the limit max_tokens is the exact count.
    scripted_server.script(stream(text_chunks(["Hel", "lo"], finish_reason="length")))
    done = last(await collect(await connect(card(scripted_server.url)), ask("Hi", replace(GREEDY, max_tokens=5))))
    assert (done.status, done.finish_reason, done.text, done.completion_tokens) == ("done", "length", "Hello", 5)
    assert done.remote is not None and done.remote["tokens_counted_by"] == "max_tokens"


async def test_leaving_the_async_for_early_closes_the_stream(scripted_server: ScriptedServer, connect: Connect) -> None:
    scripted_server.script(stream(text_chunks([f"{n}, " for n in range(100)]), delay=0.05))
    model = await connect(card(scripted_server.url))
    seen = 0
    async for event in model.turn(ask("Count.")):
        seen += isinstance(event, TextPiece)
        if seen == 2:
            break
    await eventually(lambda: scripted_server.disconnects == 1, timeout=5, what="the server to see the client leave")
    await eventually(lambda: model.state == "ready", timeout=5, what="the model to be ready again")


# --- failures --------------------------------------------------------------------------------------


async def test_a_closed_port_fails_the_load_asking_whether_the_server_runs(connect: Connect) -> None:
    message = await load_error(connect, card(f"http://127.0.0.1:{free_port()}/v1"))
    assert "connection refused" in message and "is the server running" in message


async def test_a_host_that_does_not_resolve_fails_the_load_saying_dns(connect: Connect) -> None:
    message = await load_error(connect, card("http://nosuch.invalid/v1"))
    assert "DNS lookup failed" in message and "http://nosuch.invalid/v1" in message


async def test_https_to_a_plain_http_server_fails_the_load_saying_tls(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    message = await load_error(connect, card(scripted_server.url.replace("http://", "https://")))
    assert "TLS handshake" in message and "use http://" in message


async def test_a_401_with_api_key_env_names_the_variable(
    scripted_server: ScriptedServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    scripted_server.script(error(401, "invalid key"))
    done = await turn_error(connect, card(scripted_server.url, api_key_env=KEY_ENV))
    assert f"refused the key in {KEY_ENV}" in str(done.error) and "invalid key" in str(done.error)


async def test_a_401_without_api_key_env_says_to_set_api_key_env(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(error(401, "no key given"))
    done = await turn_error(connect, card(scripted_server.url))
    assert "wants an API key" in str(done.error) and "api_key_env" in str(done.error)


async def test_a_404_on_chat_names_the_model_and_suggests_models_list(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(error(404, "model not found"))
    done = await turn_error(connect, card(scripted_server.url))
    assert "no model 'tiny'" in str(done.error)
    assert f"`ladder models list --endpoint {scripted_server.url}`" in str(done.error)


async def test_loading_a_model_the_server_does_not_list_names_what_it_serves(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    message = await load_error(connect, card(scripted_server.url, model="huge-70b"))
    assert "does not serve 'huge-70b'" in message and "(it serves: tiny)" in message


async def test_a_503_twice_then_a_stream_is_retried_with_two_notices(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(error(503, "loading model"), error(503, "loading model"))
    events = await collect(await connect(card(scripted_server.url)), ask("Hi"))
    notices = [event.message for event in events if isinstance(event, Notice)]
    done = last(events)
    assert (done.status, done.text) == ("done", "Hello there")
    assert len(notices) == 2 and all("busy (503): retrying" in notice for notice in notices), notices
    assert len(scripted_server.chat_requests) == 3
    assert done.remote is not None and done.remote["retries"] == 2


async def test_a_429_waits_as_long_as_its_retry_after_says(scripted_server: ScriptedServer, connect: Connect) -> None:
    scripted_server.script(error(429, "slow down", retry_after=0.1))
    model = await connect(card(scripted_server.url))
    started = time.perf_counter()
    events = await collect(model, ask("Hi"))
    elapsed = time.perf_counter() - started
    assert last(events).status == "done"
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert notices == [f"{host(scripted_server)} is busy (429): retrying in 0.1 s (retry 1 of 4)"]
    assert elapsed >= 0.1  # the back-off's own first wait is 0.05 s


async def test_a_429_always_fails_after_the_bounded_retries(scripted_server: ScriptedServer, connect: Connect) -> None:
    scripted_server.script(*[error(429, "rate limited") for _ in range(10)])
    done = await turn_error(connect, card(scripted_server.url))
    assert "answered 429: rate limited" in str(done.error)
    assert len(scripted_server.chat_requests) == 1 + len(remote.BUSY_WAITS)


async def test_a_stalled_stream_fails_after_stall_timeout_keeping_the_partial_text(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(stream(text_chunks(["Hel", "lo"], finish_reason=None), end="stall"))
    done = await turn_error(connect, card(scripted_server.url, stall_timeout=0.5))
    assert "sent nothing for 0.5 s" in str(done.error) and "stall_timeout" in str(done.error)
    assert "mid-reply" in str(done.error) and done.text == "Hello"
    assert done.elapsed_s >= 0.5


async def test_a_malformed_event_fails_saying_it_is_not_an_openai_chat_chunk(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(stream(["{not json"]))
    done = await turn_error(connect, card(scripted_server.url))
    assert "not an OpenAI chat chunk" in str(done.error)


async def test_a_server_closing_mid_reply_fails_saying_so_and_keeps_the_partial_text(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(stream(text_chunks(["Hel", "lo"], finish_reason=None), end="close"))
    done = await turn_error(connect, card(scripted_server.url))
    assert "closed the connection mid-reply, after 2 tokens" in str(done.error)
    assert done.text == "Hello"


async def test_a_stream_that_ends_without_a_finish_reason_fails_saying_it_ended_the_stream(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(stream(text_chunks(["Hel", "lo"], finish_reason=None)))
    done = await turn_error(connect, card(scripted_server.url))
    assert "ended the stream before the reply finished" in str(done.error)
    assert done.text == "Hello"


async def test_a_400_refusing_the_extra_fields_is_retried_without_them_and_recorded(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    scripted_server.script(error(400, "Unrecognized request argument supplied: top_k"))
    done = last(await collect(await connect(card(scripted_server.url)), ask("Hi")))
    assert (done.status, done.text) == ("done", "Hello there")
    first, second = (request.body for request in scripted_server.chat_requests)
    assert first["top_k"] == 40
    assert not {"top_k", "min_p", "repeat_penalty", "repetition_penalty"} & set(second)
    assert second["temperature"] == 0.0 and second["seed"] == 1
    assert done.remote is not None
    assert done.remote["params_refused"] == ["min_p", "repeat_penalty", "top_k"]
    assert done.remote["params_unconfirmed"] == []
    assert "top_k" not in done.remote["params_sent"]


# --- the key -----------------------------------------------------------------------------------------


async def test_the_key_from_api_key_env_is_sent_as_a_bearer_token(
    scripted_server: ScriptedServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    done = last(await collect(await connect(card(scripted_server.url, api_key_env=KEY_ENV)), ask("Hi")))
    assert done.status == "done"
    assert [request.headers["authorization"] for request in scripted_server.requests] == [f"Bearer {KEY}"] * 2
    assert KEY not in repr(done)


async def test_a_401_echoing_the_key_shows_stars_instead_of_the_key(
    scripted_server: ScriptedServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    scripted_server.script(error(401, f"Incorrect API key provided: {KEY}"))
    done = await turn_error(connect, card(scripted_server.url, api_key_env=KEY_ENV))
    assert "Incorrect API key provided: ***" in str(done.error)
    assert KEY not in repr(done)


async def test_a_401_at_load_echoing_the_key_shows_stars_instead_of_the_key(
    scripted_server: ScriptedServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    scripted_server.models_reply = error(401, f"Incorrect API key provided: {KEY}")
    message = await load_error(connect, card(scripted_server.url, api_key_env=KEY_ENV))
    assert "Incorrect API key provided: ***" in message and KEY not in message


async def test_a_missing_key_variable_fails_the_load_naming_it(
    scripted_server: ScriptedServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    message = await load_error(connect, card(scripted_server.url, api_key_env=KEY_ENV))
    assert f"the environment variable {KEY_ENV} is not set" in message
    assert scripted_server.requests == []  # nothing was sent without the key


# --- cards of an endpoint ----------------------------------------------------------------------------


def test_endpoint_cards_makes_a_card_for_every_model_the_server_serves() -> None:
    with ScriptedServer(models=("tiny", "Qwen2.5-7B-Instruct-Q4_K_M")) as server:
        cards = endpoint_cards(server.url)
    assert [made.endpoint.model if made.endpoint else None for made in cards] == ["tiny", "Qwen2.5-7B-Instruct-Q4_K_M"]
    assert [made.name for made in cards] == [f"tiny @ {host(server)}", f"Qwen2.5-7B-Instruct-Q4_K_M @ {host(server)}"]
    assert [made.params for made in cards] == [None, 7_000_000_000]
    assert cards[1].quant == "Q4_K_M"
    assert [request.path for request in server.requests] == ["/v1/models"]


def test_endpoint_cards_of_url_hash_model_makes_one_card_without_asking_the_server(
    scripted_server: ScriptedServer,
) -> None:
    cards = endpoint_cards(f"{scripted_server.url}#tiny")
    assert len(cards) == 1 and cards[0].endpoint is not None
    assert (cards[0].endpoint.url, cards[0].endpoint.model) == (scripted_server.url, "tiny")
    assert scripted_server.requests == []


def test_parse_endpoint_splits_off_the_model_and_refuses_a_url_that_is_not_http() -> None:
    assert parse_endpoint("http://gpu-box:8080/v1/#Qwen2.5-7B") == ("http://gpu-box:8080/v1", "Qwen2.5-7B")
    assert parse_endpoint("https://gpu-box/v1") == ("https://gpu-box/v1", None)
    with pytest.raises(RemoteError, match="must be an http:// or https:// URL"):
        parse_endpoint("gpu-box:8080")


async def test_list_models_gives_the_servers_entries_or_says_what_went_wrong(scripted_server: ScriptedServer) -> None:
    assert [entry["id"] for entry in await list_models(scripted_server.url)] == ["tiny"]
    with pytest.raises(RemoteError, match="is the server running"):
        await list_models(f"http://127.0.0.1:{free_port()}/v1")
