"""The test servers of tests/servers.py behave as the remote-engine tests rely on: checked with a plain HTTP
client (httpx2), not with Ladder's own code."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from servers import DEFAULT_USAGE, MODEL_ALIAS, LlamaServer, ScriptedServer, error, stream, text_chunks
from waiting import wait_for


def chat(prompt: str, max_tokens: int, stream: bool = False, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {"model": MODEL_ALIAS, "messages": messages, "max_tokens": max_tokens, "stream": stream, **extra}


def data_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


@pytest.mark.model
def test_llama_server_lists_its_model_and_answers_a_chat_completion(llama_server: LlamaServer) -> None:
    with httpx2.Client(timeout=60) as client:
        models = client.get(f"{llama_server.url}/models").json()
        answer = client.post(f"{llama_server.url}/chat/completions", json=chat("Hi", max_tokens=8)).json()
    assert [model["id"] for model in models["data"]] == [MODEL_ALIAS]
    assert answer["choices"][0]["message"]["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 8


@pytest.mark.model
def test_llama_server_logs_a_client_leaving_mid_stream_and_stops_generating(llama_server: LlamaServer) -> None:
    disconnects, finished = llama_server.disconnects(), len(llama_server.eval_runs())
    url = f"{llama_server.url}/chat/completions"
    with httpx2.Client(timeout=60) as client:
        with client.stream("POST", url, json=chat("Tell a long story.", max_tokens=2000, stream=True)) as response:
            lines = response.iter_lines()
            received = [next(line for line in lines if line.startswith("data: ")) for _ in range(3)]
            assert all("chat.completion.chunk" in line for line in received)
        # Closing the response mid-body closed the connection.
        wait_for(lambda: llama_server.disconnects() == disconnects + 1, what="the server's 'Disconnected' line")
        follow_up = client.post(url, json=chat("Hi", max_tokens=4)).json()
    assert follow_up["choices"][0]["message"]["content"]
    # Had the cancelled generation gone on, it would have finished first (requests wait their turn): ~2000 runs.
    new_runs = llama_server.eval_runs()[finished:]
    assert len(new_runs) == 1 and new_runs[0] <= 4, new_runs


@pytest.mark.model
def test_a_fresh_llama_server_wants_its_key_and_can_be_killed(
    start_llama_server: Callable[..., LlamaServer],
) -> None:
    server = start_llama_server(api_key="test-key-123")
    with httpx2.Client(timeout=30) as client:
        assert client.get(f"{server.url}/models").status_code == 401
        assert client.get(f"{server.url}/models", headers={"Authorization": "Bearer test-key-123"}).status_code == 200
    server.kill()
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(f"{server.url}/models", timeout=5)


def test_scripted_server_replays_a_503_then_a_stream_and_records_what_was_sent(
    scripted_server: ScriptedServer,
) -> None:
    hello = stream(text_chunks(["Hel", "lo"], usage=DEFAULT_USAGE))
    scripted_server.script(error(503, "loading model", retry_after=2), hello)
    url, body = f"{scripted_server.url}/chat/completions", chat("Hi", max_tokens=8, stream=True, top_k=40)
    with httpx2.Client(timeout=10) as client:
        busy = client.post(url, json=body, headers={"Authorization": "Bearer test-key-123"})
        streamed = client.post(url, json=body)
    assert (busy.status_code, busy.headers["Retry-After"]) == (503, "2")
    assert busy.json()["error"]["message"] == "loading model"
    events = data_events(streamed.text.splitlines())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"]) == "Hello"
    assert chunks[-1]["usage"] == DEFAULT_USAGE
    assert [request.body["top_k"] for request in scripted_server.chat_requests] == [40, 40]
    assert scripted_server.chat_requests[0].headers["authorization"] == "Bearer test-key-123"


def test_scripted_server_counts_a_client_that_leaves_a_stalled_stream(scripted_server: ScriptedServer) -> None:
    scripted_server.script(stream(text_chunks(["Hel"], finish_reason=None), end="stall"))
    url, body = f"{scripted_server.url}/chat/completions", chat("Hi", max_tokens=8, stream=True)
    with httpx2.Client(timeout=10) as client, client.stream("POST", url, json=body) as response:
        lines = response.iter_lines()  # kept: an abandoned iterator would close the connection
        assert "Hel" in next(line for line in lines if line.startswith("data: "))
        assert scripted_server.disconnects == 0  # stalled, not gone
    wait_for(lambda: scripted_server.disconnects == 1, what="the scripted server to notice the client left")


def test_scripted_server_can_close_a_stream_mid_reply(scripted_server: ScriptedServer) -> None:
    scripted_server.script(stream(text_chunks(["Hel"], finish_reason=None), end="close"))
    url = f"{scripted_server.url}/chat/completions"
    with httpx2.Client(timeout=10) as client, client.stream("POST", url, json=chat("Hi", 8, stream=True)) as response:
        lines = response.iter_lines()
        assert "Hel" in next(line for line in lines if line.startswith("data: "))
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            list(lines)
    assert scripted_server.disconnects == 0


def test_stopping_the_scripted_server_ends_a_stalled_stream() -> None:
    server = ScriptedServer()
    server.script(stream(text_chunks(["Hel"], finish_reason=None), end="stall"))
    url = f"{server.url}/chat/completions"
    with httpx2.Client(timeout=10) as client, client.stream("POST", url, json=chat("Hi", 8, stream=True)) as response:
        lines = response.iter_lines()
        assert "Hel" in next(line for line in lines if line.startswith("data: "))
        server.stop()
        with pytest.raises(httpx2.RemoteProtocolError):
            list(lines)
    assert server.disconnects == 0


def test_scripted_server_defaults_and_a_malformed_event(scripted_server: ScriptedServer) -> None:
    scripted_server.script(stream(["{not json"]))
    url = f"{scripted_server.url}/chat/completions"
    with httpx2.Client(timeout=10) as client:
        models = client.get(f"{scripted_server.url}/models").json()
        malformed = client.post(url, json=chat("Hi", 8, stream=True)).text
        plain = client.post(url, json=chat("Hi", 8)).json()
        default_stream = client.post(url, json=chat("Hi", 8, stream=True)).text
        missing = client.get(f"{scripted_server.url}/nothing")
    assert [model["id"] for model in models["data"]] == ["tiny"]
    assert data_events(malformed.splitlines()) == ["{not json", "[DONE]"]
    assert plain["choices"][0]["message"]["content"] == "Hello there"
    pieces = [json.loads(event)["choices"] for event in data_events(default_stream.splitlines())[:-1]]
    assert "".join(choices[0]["delta"].get("content", "") for choices in pieces if choices) == "Hello there"
    assert missing.status_code == 404
    assert [(request.method, request.path) for request in scripted_server.requests][-1] == ("GET", "/v1/nothing")
