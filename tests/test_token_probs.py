"""Token probabilities (#14): recorded by the worker only when asked, equal to llama-cpp-python's own
computation; asked of servers; written to the transcript as a `token_probs` event only when recorded and
read back by history; and the view (Ctrl+T in chat, t in review) with its cursor, alternatives and
divergence between two panes."""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chat_app import chat, loaded, open_screen, open_settings, save_settings, scripted_app, send_and_wait
from scripted import ScriptedModel, card, word_probs
from servers import MODEL_ALIAS, Connect, LlamaServer, ScriptedServer, stream, text_chunks
from textual.widgets import Checkbox
from waiting import until

from tui.app import LadderApp
from tui.cards import Catalog, load_catalog
from tui.engine.endpoints import card_for
from tui.engine.events import Finished, Notice, SamplingParams, TurnRequest
from tui.engine.local import Engine
from tui.history import load_record
from tui.screens.chat import ChatScreen
from tui.screens.probs import ProbsScreen, ReplyProbs, Spans, divergence
from tui.screens.review import ReviewScreen
from tui.session import Session, resume
from tui.store import ensure_file
from tui.transcript import append_event

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=24)
PROMPT = "The capital of France is Paris. The capital of Germany is"


# --- the worker, against llama-cpp-python's own computation ------------------------------------------


def reference_greedy(path: Path, prompt: str, n: int) -> list[list[Any]]:
    """A greedy reply computed directly by llama-cpp-python with the logits of every position kept: per
    token its text, log-probability and the 5 likeliest tokens, recorded as the worker records them."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=512, flash_attn=True, n_threads=2, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        llm.eval(llm.tokenize(prompt.encode(), add_bos=True, special=False))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens: list[list[Any]] = []
        while len(tokens) < n:
            logits = llm.scores[llm.n_tokens - 1].astype(np.float64)
            logprobs = logits - logits.max() - math.log(np.exp(logits - logits.max()).sum())
            chosen = int(np.argmax(logits))
            if llama_cpp.llama_vocab_is_eog(vocab, chosen):
                break
            best = [int(t) for t in np.argsort(-logprobs)[:5]]
            alternatives = [
                [llm.detokenize([t], special=True).decode(errors="backslashreplace"), logprobs[t]] for t in best
            ]
            tokens.append([decoder.decode(llm.detokenize([chosen])), float(logprobs[chosen]), alternatives])
            llm.eval([chosen])
        return tokens
    finally:
        llm.close()


@pytest.mark.model
async def test_a_greedy_reply_records_the_log_probs_llama_cpp_python_computes_and_nothing_when_not_asked() -> None:
    smol = load_catalog().cards["smollm2-135m-instruct"]
    expected = reference_greedy(ensure_file(smol), PROMPT, GREEDY.max_tokens)
    engine = Engine()
    try:
        model = engine.model(smol)
        await model.load()
        asked = TurnRequest([], GREEDY, completion=PROMPT, logprobs=True)
        done = [event async for event in model.turn(asked)][-1]
        plain = [event async for event in model.turn(TurnRequest([], GREEDY, completion=PROMPT))][-1]
    finally:
        await engine.close()
    assert isinstance(done, Finished) and isinstance(plain, Finished)
    assert plain.tokens is None and plain.text == done.text  # not asked: nothing recorded, the same reply
    assert done.tokens is not None and len(done.tokens) == done.completion_tokens == len(expected) > 10
    assert "".join(text for text, _, _ in done.tokens).strip() == done.text
    for (text, logprob, alternatives), (want_text, want_logprob, want_alternatives) in zip(
        done.tokens, expected, strict=True
    ):
        assert text == want_text
        assert logprob == pytest.approx(want_logprob, abs=1e-3)
        assert [alt for alt, _ in alternatives] == [alt for alt, _ in want_alternatives]
        assert [p for _, p in alternatives] == pytest.approx([p for _, p in want_alternatives], abs=1e-3)
        # Greedy, without a repeat penalty: the likeliest token is the one chosen.
        assert alternatives[0][0] == text and alternatives[0][1] == pytest.approx(logprob, abs=1e-6)


# --- remote engines ------------------------------------------------------------------------------------


def with_logprobs(chunks: list[dict[str, Any] | str], logprobs: list[float]) -> list[dict[str, Any] | str]:
    """Chat chunks carrying each piece's log-probability and two alternatives, as OpenAI streams them."""
    for chunk, logprob in zip(chunks, logprobs, strict=False):
        assert isinstance(chunk, dict)
        token = chunk["choices"][0]["delta"]["content"]
        top = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        top.append({"token": " maybe", "logprob": logprob - 2, "bytes": None})
        item = {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top[::-1]}
        chunk["choices"][0]["logprobs"] = {"content": [item], "refusal": None}
    return chunks


async def test_a_remote_chat_asks_for_logprobs_only_when_recording_and_keeps_those_the_server_sends(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    model = await connect(card_for(scripted_server.url, {"id": "tiny"}))
    scripted_server.script(stream(text_chunks(["Hello", " there"])))
    plain = [event async for event in model.turn(TurnRequest([{"role": "user", "content": "Hi"}], GREEDY))][-1]
    scripted_server.script(stream(with_logprobs(text_chunks(["Hello", " there"]), [-0.1, -1.5])))
    asked = TurnRequest([{"role": "user", "content": "Hi"}], GREEDY, logprobs=True)
    done = [event async for event in model.turn(asked)][-1]
    first, second = (request.body for request in scripted_server.chat_requests)
    assert "logprobs" not in first and "top_logprobs" not in first
    assert isinstance(plain, Finished) and plain.tokens is None
    assert (second["logprobs"], second["top_logprobs"]) == (True, 5)
    assert isinstance(done, Finished) and done.text == "Hello there"
    assert done.tokens == [
        ["Hello", -0.1, [["Hello", -0.1], [" maybe", -2.1]]],  # likeliest first, whatever order the server sent
        [" there", -1.5, [[" there", -1.5], [" maybe", -3.5]]],
    ]


async def test_a_completion_asks_for_logprobs_by_count_and_a_server_without_them_says_so(
    scripted_server: ScriptedServer, connect: Connect
) -> None:
    model = await connect(card_for(scripted_server.url, {"id": "tiny"}))
    events = [event async for event in model.turn(TurnRequest([], GREEDY, completion="Once", logprobs=True))]
    assert scripted_server.completion_requests[0].body["logprobs"] == 5
    done = events[-1]
    missing = f"{urlsplit(scripted_server.url).netloc} returned no token probabilities: this server does not give them"
    assert isinstance(done, Finished) and done.text == "Hello there" and done.tokens is None
    assert Notice(missing) in events and missing in done.notices


@pytest.mark.model
async def test_llama_cpp_server_gives_chat_logprobs_whose_tokens_join_into_the_reply(
    llama_server: LlamaServer, connect: Connect
) -> None:
    model = await connect(card_for(llama_server.url, {"id": MODEL_ALIAS}))
    request = TurnRequest([{"role": "user", "content": "Say hello."}], GREEDY, logprobs=True)
    done = [event async for event in model.turn(request)][-1]
    assert isinstance(done, Finished) and done.status == "done" and done.tokens
    assert len(done.tokens) == done.completion_tokens
    assert "".join(text for text, _, _ in done.tokens).strip() == done.text
    for text, logprob, alternatives in done.tokens:  # greedy: the likeliest of each is the one chosen
        assert alternatives[0] == [text, pytest.approx(logprob)] and logprob <= 0


# --- the session, its transcript and history -------------------------------------------------------------


def events_of(session: Session) -> list[dict[str, Any]]:
    assert session.transcript.path is not None
    return [json.loads(line) for line in session.transcript.path.read_text().splitlines()]


async def test_the_token_probs_event_is_written_only_when_recorded_and_history_and_resume_read_it(
    tmp_path: Path,
) -> None:
    models = [ScriptedModel(card("tiny", 100_000_000)), ScriptedModel(card("mid", 500_000_000))]
    session = Session(models, sessions_dir=tmp_path)
    await session.load()
    [_ async for _ in session.send("first")]
    assert all(not model.requests[-1].logprobs for model in models)
    session.change_settings(logprobs=True)
    [_ async for _ in session.send("second")]
    assert all(model.requests[-1].logprobs for model in models)
    session.end_transcript()

    events = events_of(session)
    kinds = [(event["type"], event.get("turn"), event.get("model")) for event in events[1:]]
    assert [kind for kind in kinds if kind[0] == "token_probs"] == [
        ("token_probs", 2, "tiny"),
        ("token_probs", 2, "mid"),
    ]
    for model_id in ("tiny", "mid"):  # each right after its reply
        assert kinds.index(("token_probs", 2, model_id)) == kinds.index(("reply", 2, model_id)) + 1
    assert events[0]["logprobs"] is False and any(event.get("logprobs") is True for event in events[1:])

    record = load_record(session.transcript.path)
    tiny_pieces = ["tiny", " answers:", " second"]
    assert record.turns[1].replies["tiny"].tokens == [
        [text, round(logprob, 4), [[alt, round(p, 4)] for alt, p in alts]]
        for text, logprob, alts in word_probs(tiny_pieces)
    ]
    assert record.turns[0].replies["tiny"].tokens is None and record.settings["logprobs"] is True
    resumed = resume(record, [ScriptedModel(card("tiny", 100_000_000))], None)
    assert resumed.logprobs and resumed.token_probs[2, "tiny"] == record.turns[1].replies["tiny"].tokens


async def test_a_damaged_token_probs_event_is_left_out_and_said_so(tmp_path: Path) -> None:
    session = Session([ScriptedModel(card("tiny", 100_000_000))], sessions_dir=tmp_path)
    await session.load()
    [_ async for _ in session.send("first")]
    session.end_transcript()
    path = session.transcript.path
    assert path is not None
    append_event(path, {"type": "token_probs", "turn": 1, "model": "tiny", "tokens": [["a", "not a number", []]]})
    append_event(path, {"type": "token_probs", "turn": 1, "model": "nobody", "tokens": [["a", -0.5, []]]})
    record = load_record(path)
    assert record.turns[0].replies["tiny"].tokens is None
    assert record.problems == [f"{path.name}: 2 event(s) with fields of the wrong type; left out"]


@pytest.mark.model
def test_ladder_ask_with_logprobs_saves_the_reply_with_its_token_probs(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tui.cli", "ask", "--model", "smollm2-135m-instruct", "--temperature", "0"]
    command += ["--max-tokens", "8", "--sessions-dir", str(tmp_path), "--logprobs", "Name a colour."]
    result = subprocess.run(
        command, capture_output=True, text=True, env=os.environ, timeout=300, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    header, *events = (json.loads(line) for line in next(tmp_path.glob("*.jsonl")).read_text().splitlines())
    reply, probs = events[-2:]
    assert header["logprobs"] is True and reply["type"] == "reply" and probs["type"] == "token_probs"
    assert len(probs["tokens"]) == reply["completion_tokens"] == 8
    assert "".join(text for text, _, _ in probs["tokens"]).strip() == reply["text"]


# --- where two replies part ------------------------------------------------------------------------------


def tokens(*pieces: tuple[str, float]) -> list[list[Any]]:
    return [[text, logprob, [[text, logprob]]] for text, logprob in pieces]


def test_replies_of_one_tokenizer_part_at_the_first_token_that_differs() -> None:
    this = Spans(tokens(("The", -0.1), (" capital", -0.2), (" is", -0.3), (" Paris", -0.4)))
    other = ReplyProbs(
        "B", "The capital is Lyon", tokens(("The", -0.1), (" capital", -0.2), (" is", -0.3), (" Lyon", -2.0))
    )
    parting = divergence(this, other)
    assert parting is not None and (parting.index, parting.other_text, parting.other_logprob) == (3, " Lyon", -2.0)


def test_tokens_that_run_across_the_difference_take_it_back_to_a_boundary_both_share() -> None:
    this = Spans(tokens(("It", -0.1), (" is", -0.1), (" Paris", -0.5), (".", -0.1)))
    other = ReplyProbs("B", None, tokens(("It", -0.1), (" is", -0.1), (" Par", -1.0), ("isian", -0.2)))
    parting = divergence(this, other)
    # The first different character is after " Paris" ("." and "i"), but the choice was " Paris" or " Par".
    assert parting is not None and (parting.index, parting.other_text, parting.other_logprob) == (2, " Par", -1.0)


def test_identical_replies_do_not_part_and_a_shorter_one_ends_where_the_other_goes_on() -> None:
    this = Spans(tokens((" Yes", -0.1), (".", -0.1)))
    assert divergence(this, ReplyProbs("B", "Yes.", None)) is None  # the text alone: not recorded
    parting = divergence(this, ReplyProbs("B", "Yes. And", None))
    assert parting is not None and (parting.index, parting.other_text, parting.other_logprob) == (None, " And", None)


def test_the_bytes_of_one_character_are_one_group_with_their_joint_probability() -> None:
    fish = Spans(tokens(("A", -0.1), ("", -0.5), ("", -0.2), ("🐠", -0.3), (" fish", -0.1)))
    assert fish.group(1) == fish.group(3) == range(1, 4) and fish.group(4) == range(4, 5)
    assert fish.logprob(fish.group(2)) == pytest.approx(-1.0)
    other = ReplyProbs("B", None, tokens(("A", -0.1), ("", -0.5), ("", -0.2), ("🐟", -1.3)))
    parting = divergence(fish, other)
    assert parting is not None and (parting.index, parting.other_text) == (1, "🐟")
    assert parting.other_logprob == pytest.approx(-2.0)


# --- the view --------------------------------------------------------------------------------------------

LADDER = [
    card("tiny", 100_000_000, "Tiny 100M"),
    card("mid", 500_000_000, "Mid 500M"),
    card("big", 1_500_000_000, "Big 1.5B"),
]
REPLIES = {
    "tiny": "These emoji describe the ocean 🐠🐟🐡🌊 and its fish.",
    "mid": "These emoji describe Finding Nemo, a film about a clownfish.",
    "big": "These emoji describe a film: Finding Nemo (2003).",
}


def make_app(tmp_path: Path) -> LadderApp:
    return scripted_app(tmp_path, LADDER, lambda c: ScriptedModel(c, script=lambda request: REPLIES[c.id]))


async def record_from_settings(pilot) -> None:  # type: ignore[no-untyped-def]
    """Turn recording on as a person would: the Settings dialog's checkbox."""
    settings = await open_settings(pilot)
    settings.query_one("#logprobs", Checkbox).value = True
    await save_settings(pilot)


async def a_recorded_turn(pilot) -> None:  # type: ignore[no-untyped-def]
    """Once the models have loaded, turn recording on and send one turn; wait for every reply."""
    await loaded(pilot)
    await record_from_settings(pilot)
    await send_and_wait(pilot, "which film", 1)


async def open_the_view(pilot, key: str = "ctrl+t") -> ProbsScreen:  # type: ignore[no-untyped-def]
    """Press `key` (Ctrl+T in chat, t in review) and wait for the token probabilities view."""
    return await open_screen(pilot, key, ProbsScreen, "the view")


def shown(screen: ProbsScreen, selector: str) -> str:
    """What a part of the view shows, each run of spaces as one (the columns are padded)."""
    return "\n".join(" ".join(line.split()) for line in str(screen.query_one(selector).render()).splitlines())


def told(app: LadderApp, words: str) -> bool:
    return any(words in str(notification.message) for notification in app._notifications)


async def test_ctrl_t_on_a_reply_not_recorded_says_so_and_how_to_turn_recording_on(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: told(app, "No turn yet: send one, then Ctrl+T"), what="the no-turn message")
        await send_and_wait(pilot, "which film", 1)
        await pilot.press("ctrl+t")
        expected = "Tiny 100M's reply to turn 1 was not recorded with token probabilities: turn on"
        await until(pilot, lambda: told(app, expected) and told(app, "--logprobs"), what="the not-recorded message")
        assert isinstance(app.screen, ChatScreen)


async def test_the_view_moves_token_by_token_shows_alternatives_and_jumps_to_the_divergence(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await a_recorded_turn(pilot)
        view = await open_the_view(pilot)
        assert "Token probabilities · turn 1 · Tiny 100M · compared with Mid 500M" in shown(view, "#probs-title")
        assert all(label in shown(view, "#probs-legend") for label in ("≥90%", "50–90%", "20–50%", "<20%"))
        assert shown(view, "#probs-details").startswith('Token 1 of 9: "These" 98.0% (log-prob -0.020)')
        await pilot.press("right")
        details = shown(view, "#probs-details")
        assert details.splitlines()[:3] == [
            'Token 2 of 9: " emoji" 67.0% (log-prob -0.400)',
            '1. " emoji" 67.0% █████████████▍ ← chosen',  # 13.4 of 20 cells
            '2. " the" 16.5% ███▎',
        ]
        await pilot.press("end")
        assert shown(view, "#probs-details").startswith('Token 9 of 9: " fish."')
        await pilot.press("d")  # " the ocean" against " Finding Nemo"
        hint = "not the likeliest: a temperature above 0 or the repeat penalty chose it"
        assert view.cursor == 3 and hint in shown(view, "#probs-details")
        assert shown(view, "#probs-details").splitlines()[-1] == (
            'Parts from Mid 500M here: this model " the" 8.2%; Mid 500M " Finding" 8.2% (its own); '
            "not among this model's likeliest"
        )
        await pilot.press("o")
        assert "compared with Big 1.5B" in shown(view, "#probs-title")
        await pilot.press("home", "d")  # " the ocean" against " a film"
        assert view.cursor == 3 and shown(view, "#probs-details").splitlines()[-1] == (
            'Parts from Big 1.5B here: this model " the" 8.2%; Big 1.5B " a" 8.2% (its own); '
            "this model's #1 choice (22.9%)"
        )
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="the chat again")


async def test_t_in_review_shows_the_saved_probabilities(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await a_recorded_turn(pilot)
        review = ReviewScreen(load_record(chat(app).session.transcript.path), Catalog(), [])
        await app.push_screen(review)
        await until(pilot, lambda: all(p.last is not None for p in review.grid.panes.values()), what="the review")
        await pilot.press("right")  # the middle pane
        view = await open_the_view(pilot, "t")
        assert "turn 1 · Mid 500M" in shown(view, "#probs-title")
        assert shown(view, "#probs-details").startswith('Token 1 of 10: "These"')


async def test_in_a_blind_session_the_view_names_the_panes_by_letter(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.session.start_blind(7)
    async with app.run_test(size=(160, 40)) as pilot:
        await a_recorded_turn(pilot)
        view = await open_the_view(pilot)
        await pilot.press("d")
        seen = shown(view, "#probs-title") + shown(view, "#probs-details")
        assert re.search(
            r"turn 1 · Model [ABC] · compared with Model [ABC] .*Parts from Model [ABC] here", seen, re.DOTALL
        )
        assert not any(name in seen for name in ("Tiny", "Mid", "Big"))


@pytest.mark.parametrize("size", [(200, 50), (80, 24)])
def test_token_probs_view_snapshot(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def view_at_the_divergence(pilot) -> None:  # type: ignore[no-untyped-def]
        await a_recorded_turn(pilot)
        await open_the_view(pilot)
        await pilot.press("d")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=view_at_the_divergence)
