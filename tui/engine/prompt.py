"""Turning a chat history into a model's prompt text, in the format its card names.

- "gguf": the Jinja chat template stored in the GGUF file (the default).
- "template": the card's own Jinja template (for files without one, like Gemma 3 270M).
- any other name: one of llama-cpp-python's registered prompt formats ("chatml", "llama-2" ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tui.cards import ModelCard
from tui.engine.events import Message
from tui.engine.llama_adapter import ChatFormatter, registered_formatter


@dataclass(frozen=True)
class Prompt:
    text: str
    stop: list[str]  # stop strings besides the model's end-of-generation tokens
    add_bos: bool  # whether the tokenizer must add BOS (templates usually write it themselves)


Formatter = Callable[[list[Message]], Prompt]


class PromptFormatError(ValueError):
    """The card's chat format cannot be used; the message says what to change."""


def _named_formatter(name: str) -> ChatFormatter:
    """The formatter function behind one of llama-cpp-python's chat format names."""
    try:
        formatter = registered_formatter(name)
    except KeyError:
        raise PromptFormatError(f"chat_format '{name}' is not a llama-cpp-python chat format") from None
    if formatter is None:
        raise PromptFormatError(
            f"chat_format '{name}' is a special handler, not a prompt format; give the card a chat_template instead"
        )
    return formatter


def formatter_for(card: ModelCard, llm: Any) -> Formatter:
    """The formatter of a loaded `llama_cpp.Llama`: its GGUF template (or the card's format),
    with the model's own BOS and EOS token texts, which templates write themselves."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def token_text(token: int) -> str:
        return llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace") if token >= 0 else ""

    return make_formatter(
        card,
        llm.metadata.get("tokenizer.chat_template"),
        bos_token=token_text(llm.token_bos()),
        eos_token=token_text(llm.token_eos()),
    )


def make_formatter(card: ModelCard, gguf_template: str | None, bos_token: str, eos_token: str) -> Formatter:
    if card.chat_format in ("gguf", "template"):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = card.chat_template if card.chat_format == "template" else gguf_template
        if not template:
            raise PromptFormatError(
                f"{card.id}: the GGUF file has no chat template; set chat_format (e.g. chatml) "
                "or chat_template in its card"
            )
        try:
            jinja: ChatFormatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)
        except Exception as error:  # jinja2's TemplateSyntaxError, or whatever else the text provokes
            where = "the card's chat_template" if card.chat_format == "template" else "the GGUF file's chat template"
            raise PromptFormatError(
                f"{card.id}: {where} is not a valid Jinja template ({error}); give the card "
                "a working chat_template, or a chat_format such as chatml"
            ) from None

        def render(messages: list[Message]) -> Prompt:
            result = jinja(messages=messages)
            return Prompt(result.prompt, [s for s in result.stop or [] if s], add_bos=False)

        return render

    named = _named_formatter(card.chat_format)

    def render_named(messages: list[Message]) -> Prompt:
        result = named(messages=messages)
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return Prompt(result.prompt, [s for s in stop if s], add_bos=not result.added_special)

    return render_named
