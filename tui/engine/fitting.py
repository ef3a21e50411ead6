"""A request's prompt as a worker's model takes it: the chat rendered by the model's template (the
oldest turns dropped while it does not fit the context), or the completion form's text as it is;
tokenised, or a one-line reason why not. A chat template is code that may loop without end: its
rendering is stopped on a cancel or after RENDER_LIMIT seconds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from tui.engine.events import TurnRequest
from tui.engine.prompt import Formatter, Prompt, PromptFormatError

if TYPE_CHECKING:  # the worker imports llama_cpp once it runs (see worker.serve)
    from llama_cpp import Llama

RENDER_LIMIT = 5.0  # seconds a turn's prompt may take to render: a chat template can loop without end
RENDER_TICK = 0.05  # how often a render in progress looks for a cancel or the time limit
FIX_TEMPLATE = "give the card a working chat_template, or a chat_format such as chatml"


class NotPrepared(Exception):
    """A request's prompt could not be made: cancelled while it rendered, or an error (the message says why)."""

    def __init__(self, status: Literal["cancelled", "error"], message: str | None = None) -> None:
        super().__init__(message or status)
        self.status, self.message = status, message


class RenderStopped(BaseException):
    """Stops the rendering of a prompt, raised from a signal handler inside the template's code:
    a BaseException, so that no `except Exception` in the template engine can swallow it."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else f"over {RENDER_LIMIT:g} s")
        self.cancelled = cancelled


class PromptFitter:
    """The prompts of one loaded model: `llm` tokenises, `formatter` renders its chat template, and
    `cancelled` says whether the request being prepared has been cancelled."""

    def __init__(self, llm: Llama, formatter: Formatter, cancelled: Callable[[], bool]) -> None:
        self.llm, self.formatter, self.cancelled = llm, formatter, cancelled

    def prepare(self, request: TurnRequest) -> tuple[list[int], Prompt, list[str]]:
        """The request's prompt fitted into the context (see `fit`), its tokens and notices, with
        as much room kept for the reply as a turn keeps; raises NotPrepared saying why not."""
        reserve = min(request.params.max_tokens, self.llm.n_ctx() // 4)
        try:
            with self.interruptible():
                return self.fit(request.messages, reserve, request.completion)
        except RenderStopped as stopped:
            if stopped.cancelled:
                raise NotPrepared("cancelled") from None
            raise NotPrepared(
                "error",
                f"the chat template took more than {RENDER_LIMIT:g} s to render this conversation and was "
                f"stopped (it may loop without end); {FIX_TEMPLATE}",
            ) from None
        except PromptFormatError as error:
            raise NotPrepared("error", str(error)) from None
        except Exception as error:  # from the template: its own raise_exception (a ValueError), or any fault
            raise NotPrepared("error", _template_failure(error)) from None

    def fit(
        self, messages: list[dict[str, str]], reserve: int, completion: str | None = None
    ) -> tuple[list[int], Prompt, list[str]]:
        """Tokens of the prompt, the prompt, and notices; drops the oldest turns if too long.
        A completion (the completion form) is the prompt as it is, never shortened.

        How many to drop is found by bisection: a long history is rendered a few times, not
        once for every turn dropped."""
        n_ctx = self.llm.n_ctx()
        if completion is not None:
            # BOS where the model's vocabulary asks for one, as llama.cpp's own completion adds it.
            prompt = Prompt(completion, [], add_bos=True)
            tokens = self.tokenize(completion, add_bos=True, special=False)
            if not tokens:
                raise PromptFormatError("the completion prompt is empty; give it some text to continue")
            if len(tokens) + reserve > n_ctx:
                raise PromptFormatError(
                    f"this completion prompt is {len(tokens)} tokens and {reserve} more are kept for the reply, "
                    f"but the context is {n_ctx}; shorten the prompt (fewer examples), or lower max tokens"
                )
            return tokens, prompt, []
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        turns = messages[len(system) :]
        rendered: dict[int, tuple[list[int], Prompt]] = {}

        def render(dropped: int) -> tuple[list[int], Prompt]:
            """The prompt without the `dropped` oldest user turns and this model's replies to them."""
            if self.cancelled():
                raise RenderStopped(cancelled=True)
            if dropped not in rendered:
                prompt = self.formatter(system + turns[2 * dropped :])
                rendered[dropped] = self.tokenize(prompt.text, prompt.add_bos, special=True), prompt
            return rendered[dropped]

        def fits(dropped: int) -> bool:
            return len(render(dropped)[0]) + reserve <= n_ctx

        most = max(0, (len(turns) - 1) // 2)  # the last user turn always stays
        dropped = 0
        if not fits(0):
            if not fits(most):
                raise PromptFormatError(
                    f"this turn's prompt is {len(render(most)[0])} tokens and {reserve} more are kept for the "
                    f"reply, but the context is {n_ctx}; shorten the message or the system prompt, or lower max tokens"
                )
            too_few, dropped = 0, most  # fits(dropped) holds, fits(too_few) does not
            while dropped - too_few > 1:
                middle = (too_few + dropped) // 2
                if fits(middle):
                    dropped = middle
                else:
                    too_few = middle
        tokens, prompt = render(dropped)
        notices = (
            [
                f"the conversation no longer fits in {n_ctx} tokens: left out the "
                f"{dropped} earliest turn(s) for this reply"
            ]
            if dropped
            else []
        )
        return tokens, prompt, notices

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        """`special`: control tokens written in the text are parsed as such (a chat template writes
        them), not in a completion, which is the user's own text."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Raise RenderStopped in the code within once the request is cancelled or RENDER_LIMIT has
        passed: a chat template is code that may never return, and only a signal handler (run in
        the main thread, where turns run) can stop it. It raises once: it disarms its timer first."""
        deadline = time.monotonic() + RENDER_LIMIT

        def check(_signal: int, _frame: object) -> None:
            if self.cancelled() or time.monotonic() > deadline:
                signal.setitimer(signal.ITIMER_REAL, 0)
                raise RenderStopped(cancelled=self.cancelled())

        previous = signal.signal(signal.SIGALRM, check)
        timer = signal.setitimer(signal.ITIMER_REAL, RENDER_TICK, RENDER_TICK)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, *timer)
            signal.signal(signal.SIGALRM, previous)


def _template_failure(error: Exception) -> str:
    if type(error) is ValueError:  # what the template itself raised, e.g. roles that do not alternate
        return f"the chat template refused this conversation: {error}"
    return f"the chat template failed ({type(error).__name__}: {error}); {FIX_TEMPLATE}"
