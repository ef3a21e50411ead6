"""Smoke test: every rung of the offline ladder loads and answers in its own chat format; and the
chat formats themselves, from a card's template or by a llama-cpp-python format name."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tui.cards import load_catalog
from tui.engine.events import Finished, SamplingParams
from tui.engine.local import Engine
from tui.engine.prompt import PromptFormatError, make_formatter
from tui.paths import sessions_dir
from tui.session import Session

SYSTEM = "You are a helpful assistant. Answer briefly."


def test_gemma_card_folds_the_system_prompt_into_the_first_user_turn() -> None:
    card = load_catalog().cards["gemma-3-270m"]
    render = make_formatter(card, gguf_template=None, bos_token="<bos>", eos_token="<eos>")
    prompt = render(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert prompt.text == (
        f"<bos><start_of_turn>user\n{SYSTEM}\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_chat_format_name_renders_with_the_formatter_llama_cpp_python_registers_under_it() -> None:
    card = load_catalog().cards["smollm2-135m-instruct"]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
    chatml = make_formatter(replace(card, chat_format="chatml"), None, bos_token="<s>", eos_token="</s>")(messages)
    assert chatml.text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chatml.stop == ["<|im_end|>"] and chatml.add_bos  # the format writes no BOS itself
    # "vicuna" is registered from a function named `format`: found by its name all the same.
    vicuna = make_formatter(replace(card, chat_format="vicuna"), None, bos_token="<s>", eos_token="</s>")(messages)
    assert vicuna.text.endswith("USER: Hi ASSISTANT:")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-format", "chat_format 'no-such-format' is not a llama-cpp-python chat format"),
        ("functionary", "chat_format 'functionary' is a special handler, not a prompt format"),
    ],
)
def test_a_chat_format_name_that_is_no_prompt_format_is_a_clear_error(name: str, message: str) -> None:
    card = replace(load_catalog().cards["smollm2-135m-instruct"], chat_format=name)
    with pytest.raises(PromptFormatError, match=message):
        make_formatter(card, None, bos_token="<s>", eos_token="</s>")


@pytest.mark.model
async def test_each_offline_model_answers_in_its_chat_format() -> None:
    catalog = load_catalog()
    engine = Engine()
    models = [engine.model(catalog.cards[card_id]) for card_id in catalog.lineups["offline"].models]
    session = Session(
        models,
        sessions_dir=sessions_dir(),
        system=SYSTEM,
        lineup="offline",
        params=SamplingParams(temperature=0.0, max_tokens=12, seed=3),
    )
    try:
        assert await session.load() == {}
        finished = {
            model.card.id: event
            async for model, event in session.send("What is the capital of France?")
            if isinstance(event, Finished)
        }
    finally:
        await session.close()
    assert set(finished) == set(catalog.lineups["offline"].models)
    for card_id, done in finished.items():
        assert done.status == "done" and done.text.strip(), card_id
        # A wrong template shows as the model echoing its prompt's scaffolding. (The Gemma
        # rung is a base model: it may well repeat the question, so only the others are
        # held to not echoing the system prompt.)
        echoes = ("<start_of_turn>", "<|im_start|>", "[INST]", "<<SYS>>")
        if catalog.cards[card_id].instruct:
            echoes += (SYSTEM,)
        for scaffolding in echoes:
            assert scaffolding not in done.text, (card_id, done.text)
    lines = [json.loads(line) for line in session.transcript.path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["session", "user"] + ["reply"] * 4
    assert {m["id"]: m["sha256"] for m in lines[0]["models"]} == {
        card_id: catalog.cards[card_id].sha256 for card_id in catalog.lineups["offline"].models
    }
