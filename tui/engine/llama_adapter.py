"""The one place Ladder relies on a private part of llama-cpp-python, and why.

Needed: the prompt formatter behind a named chat format ("chatml", "llama-2", ...). Ladder
renders prompts itself, to count, trim and cache their tokens, so it needs the plain
formatter function, not llama-cpp-python's chat-completion handler.

Private part: llama-cpp-python registers its named formats only as completion handlers;
`register_chat_format` wraps each formatter in a closure made by
`chat_formatter_to_chat_completion_handler`, whose free variable `chat_formatter` is the
formatter. No public map from name to formatter exists (the module's `format_*` functions
are public, but not by their registered names: "vicuna" is `format`), so the formatter is
read from that closure. A version that renames the variable makes every named format a
"special handler", which the tests of `tui.engine.prompt` catch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ChatFormatter = Callable[..., Any]  # llama_chat_format.ChatFormatter: messages=... -> ChatFormatterResponse


def registered_formatter(name: str) -> ChatFormatter | None:
    """The formatter registered under a chat format name; None for a special handler (one that
    does more than format a prompt, e.g. function calling). KeyError: no format by that name."""
    from llama_cpp import llama_chat_format

    try:
        handler = llama_chat_format.get_chat_completion_handler(name)
    except llama_chat_format.LlamaChatCompletionHandlerNotFoundException:
        raise KeyError(name) from None
    code, closure = getattr(handler, "__code__", None), getattr(handler, "__closure__", None) or ()
    cells = dict(zip(code.co_freevars, (cell.cell_contents for cell in closure), strict=True)) if code else {}
    formatter = cells.get("chat_formatter")
    return formatter if callable(formatter) else None
