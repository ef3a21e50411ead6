"""The worker process: one model, loaded once, serving turns until told to stop.

Runs in its own process so that a crash, an out-of-memory kill or a bad file ends only
this model. It keeps its KV cache between turns: each turn's prompt is the whole
history, and only the tokens after the longest prefix already in the cache are
evaluated. Each decode step (the prompt, then one token at a time) runs while holding a
lane from the shared `Lanes`, so the machine's cores are never oversubscribed.

Messages are plain dicts over two one-way pipes. In: {"op": "turn" | "cancel" |
"reset" | "stop", ...}. Out: {"ev": "ready" | "failed" | event name, ...}.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from tui.cards import ModelCard
from tui.engine.decode import DecodeError, Sampler, TokenLoop
from tui.engine.events import Finished, FirstToken, Notice, PromptReady, SamplingParams, TextPiece, TurnEvent
from tui.engine.memory import resident
from tui.engine.prompt import Formatter, Prompt, PromptFormatError, formatter_for
from tui.engine.reply import ReplyCounter, StreamedText
from tui.engine.schedule import DECODE, Cancelled, Lanes, Plan, prefill_priority

TEXT_INTERVAL = 0.03
RENDER_LIMIT = 5.0  # seconds a turn's prompt may take to render: a chat template can loop without end
RENDER_TICK = 0.05  # how often a render in progress looks for a cancel or the time limit


class RenderStopped(BaseException):
    """Stops the rendering of a prompt, raised from a signal handler inside the template's code:
    a BaseException, so that no `except Exception` in the template engine can swallow it."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else f"over {RENDER_LIMIT:g} s")
        self.cancelled = cancelled


def serve(
    card: ModelCard,
    model_path: str,
    commands: Connection,
    events: Connection,
    lanes: Lanes,
    slot: int,
    threads: int,
    log_path: str,
    quiet_threads: bool,
) -> None:
    # llama.cpp's OpenMP threads spin while they wait, also after a step, stealing a core
    # from the model that holds the lane next (measured: 4 models took 80 s instead of 11).
    # Sleeping at once (OMP_WAIT_POLICY=PASSIVE) halves speed, as llama.cpp syncs its
    # threads at every operation; a short spin keeps those syncs fast and frees the core
    # soon after a step, at some cost to a model running alone (the smallest lost ~20%),
    # so it is only set when lanes change hands. It must be set before llama.cpp loads.
    if quiet_threads:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    # Ctrl+C in the terminal reaches every process in its group; the app decides what it means
    # (it cancels the turn), so the worker ignores it. The app started this process with SIGINT
    # blocked, so one that came while the modules were imported is discarded here, not acted on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # A tick of the render timer (see Worker.interruptible) must never end the process.
    signal.signal(signal.SIGALRM, lambda _signal, _frame: None)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log.fileno(), 2)  # llama.cpp writes to stderr; keep it off the user's terminal
    sys.stderr = log
    import llama_cpp  # noqa: F401 - imported now, to count the libraries apart from the model

    before = resident()
    try:
        worker = Worker(card, model_path, events, lanes, slot, threads)
    except Exception as error:  # any failure to load is reported for this model only
        events.send({"ev": "failed", "error": _load_error(card, model_path, error)})
        return
    memory = worker.memory(before)
    events.send({"ev": "ready", "n_ctx": worker.llm.n_ctx(), "pid": os.getpid(), "memory": memory})
    worker.run(commands)


def llama_options(card: ModelCard, threads: int) -> dict[str, Any]:
    """How a model is loaded: by the worker, and by `ladder bench`'s bare loop to compare like for like."""
    return dict(
        n_ctx=card.context,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=card.gpu_layers,
        # Read, not mapped: on the CPU llama.cpp repacks most weights into a copy of its own,
        # and a mapping keeps the file's pages resident beside it (the 1.5B: 1.87 GB, not 1.28).
        use_mmap=False,
        # As llama-bench runs on the CPU by default (`-fa auto`); the smallest model is about a
        # fifth faster with it, and a quantised KV cache needs it.
        flash_attn=True,
        verbose=False,
    )


def kv_cache_bytes(metadata: dict[str, str], n_ctx: int) -> int:
    """The f16 KV cache llama.cpp allocates for `n_ctx` tokens: keys and values for every layer."""
    arch = metadata.get("general.architecture", "")

    def number(key: str, default: int = 0) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:  # a per-layer array: not in these models; count it as unknown
            return 0

    heads = number("attention.head_count", 1)
    head_size = number("embedding_length") // max(heads, 1)
    per_token = number("attention.head_count_kv", heads) * (
        number("attention.key_length", head_size) + number("attention.value_length", head_size)
    )
    return n_ctx * number("block_count") * per_token * 2


def _load_error(card: ModelCard, model_path: str, error: Exception) -> str:
    if isinstance(error, PromptFormatError):
        return str(error)
    return (
        f"could not load {model_path}: {error}. The file may be damaged or not a GGUF model "
        f"llama.cpp supports; check it with `ladder models verify {card.id}`"
    )


class Worker:
    def __init__(
        self, card: ModelCard, model_path: str, events: Connection, lanes: Lanes, slot: int, threads: int
    ) -> None:
        import llama_cpp

        self.card, self.events, self.lanes, self.slot = card, events, lanes, slot
        self.threads = threads
        self.llm = llama_cpp.Llama(model_path, **llama_options(card, threads))
        self.formatter: Formatter = formatter_for(card, self.llm)
        self.loop = TokenLoop(self.llm)
        self.cancel = threading.Event()
        self.turn_id = 0
        self.outbox: list[str] = []  # text not sent yet, and how many tokens it holds
        self.outbox_tokens = 0
        self.sent_at = 0.0
        # llama.cpp asks this between graph nodes, so a cancel also stops a long prompt.
        # It is set only while a prompt is evaluated: a Python call per node would cost
        # the smallest model a tenth of its speed on every token.
        self._abort = llama_cpp.ggml_abort_callback(lambda _data: self.cancel.is_set())
        self._no_abort = llama_cpp.ggml_abort_callback()  # a null callback
        self.warm_up()

    def memory(self, before: dict[str, int] | None) -> dict[str, int]:
        """What this worker holds once loaded, in bytes, and its parts: Python and the libraries
        (before the model), the weights (as llama.cpp holds them), the KV cache (its size from the
        model's shape), and the rest (llama.cpp's compute buffers as far as used, and ours)."""
        import llama_cpp

        now = resident() or {}
        parts = {"libraries": (before or {}).get("rss", 0), "weights": int(llama_cpp.llama_model_size(self.llm.model))}
        parts["kv_cache"] = kv_cache_bytes(self.llm.metadata, self.llm.n_ctx())
        parts["other"] = max(0, now.get("rss", 0) - sum(parts.values()))
        return {**now, **parts}

    def warm_up(self) -> None:
        """Evaluate one token now, so that the file is paged in and the buffers exist
        before the first turn: otherwise the first prompt chunk takes seconds and holds
        a lane that smaller models are waiting for."""
        first = self.llm.token_bos() if self.llm.token_bos() >= 0 else self.llm.tokenize(b" ", add_bos=False)[0]
        self.lanes.acquire(self.slot, threading.Event(), prefill_priority(self.card.params or 0, 1), cores=self.threads)
        try:
            self.loop.evaluate([first])
        finally:
            self.lanes.release(self.slot)
        self.loop.reset()

    # --- the command loop ---------------------------------------------------------------------

    def run(self, commands: Connection) -> None:
        inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        cancels: dict[int, threading.Event] = {}

        def read() -> None:
            # A thread of its own, so a cancel arrives while the main thread is decoding.
            while True:
                try:
                    message = commands.recv()
                except (EOFError, OSError):
                    os._exit(0)  # the app is gone: never outlive it
                if message["op"] == "turn":
                    cancels[message["id"]] = threading.Event()
                elif message["op"] == "cancel":
                    cancels.get(message["id"], threading.Event()).set()
                    continue
                inbox.put(message)

        threading.Thread(target=read, daemon=True).start()
        while True:
            message = inbox.get()
            if message["op"] == "stop":
                return
            if message["op"] == "reset":
                self.loop.reset()
            elif message["op"] == "turn":
                self.turn_id, self.cancel = message["id"], cancels[message["id"]]
                try:
                    finished = self.turn(
                        message["messages"], SamplingParams(**message["params"]), Plan(**message["plan"])
                    )
                except Exception as error:  # a fault in one turn fails that reply, not the model
                    self.loop.reset()
                    finished = ReplyCounter(time.perf_counter()).finish(
                        "error", "error", error=f"the turn failed ({type(error).__name__}: {error}); try it again"
                    )
                self.emit("", tokens=0, final=True)
                self.send(finished)
                del cancels[message["id"]]

    def emit(self, piece: str, tokens: int = 1, final: bool = False) -> None:
        """Send text in pieces at most every TEXT_INTERVAL seconds: per token, the fastest
        model would wake the app hundreds of times a second, taking CPU from the models."""
        self.outbox.append(piece)
        self.outbox_tokens += tokens
        now = time.perf_counter()
        text = "".join(self.outbox)
        if text and (final or now - self.sent_at >= TEXT_INTERVAL or self.sent_at == 0.0):
            self.send(TextPiece(text, self.outbox_tokens))
            self.outbox.clear()
            self.outbox_tokens = 0
            self.sent_at = now
        if final:  # the next turn starts afresh (tokens that made no text are not sent)
            self.outbox.clear()
            self.outbox_tokens = 0
            self.sent_at = 0.0

    def send(self, event: TurnEvent) -> None:
        self.events.send({"ev": type(event).__name__, "id": self.turn_id, **asdict(event)})

    # --- one turn -----------------------------------------------------------------------------

    def fit(self, messages: list[dict[str, str]], reserve: int) -> tuple[list[int], list[str], list[str]]:
        """Tokens of the prompt, its stop strings, and notices; drops the oldest turns if too long.

        How many to drop is found by bisection: a long history is rendered a few times, not
        once for every turn dropped."""
        n_ctx = self.llm.n_ctx()
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        turns = messages[len(system) :]
        rendered: dict[int, tuple[list[int], Prompt]] = {}

        def render(dropped: int) -> tuple[list[int], Prompt]:
            """The prompt without the `dropped` oldest user turns and this model's replies to them."""
            if self.cancel.is_set():
                raise RenderStopped(cancelled=True)
            if dropped not in rendered:
                prompt = self.formatter(system + turns[2 * dropped :])
                tokens = self.llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
                rendered[dropped] = tokens, prompt
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
        return tokens, prompt.stop, notices

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Raise RenderStopped in the code within once the turn is cancelled or RENDER_LIMIT has
        passed: a chat template is code that may never return, and only a signal handler (run in
        the main thread, where turns run) can stop it. It raises once: it disarms its timer first."""
        deadline = time.monotonic() + RENDER_LIMIT

        def check(_signal: int, _frame: object) -> None:
            if self.cancel.is_set() or time.monotonic() > deadline:
                signal.setitimer(signal.ITIMER_REAL, 0)
                raise RenderStopped(cancelled=self.cancel.is_set())

        previous = signal.signal(signal.SIGALRM, check)
        timer = signal.setitimer(signal.ITIMER_REAL, RENDER_TICK, RENDER_TICK)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, *timer)
            signal.signal(signal.SIGALRM, previous)

    def use_threads(self, threads: int) -> None:
        import llama_cpp

        if threads != self.threads:
            llama_cpp.llama_set_n_threads(self.llm.ctx, threads, threads)
            self.threads = threads

    def turn(self, messages: list[dict[str, str]], params: SamplingParams, plan: Plan) -> Finished:
        import llama_cpp

        start = time.perf_counter()
        reply = ReplyCounter(start)
        try:
            with self.interruptible():
                tokens, stops, notices = self.fit(messages, min(params.max_tokens, self.llm.n_ctx() // 4))
        except RenderStopped as stopped:
            if stopped.cancelled:
                return reply.finish("cancelled", "cancelled")
            return reply.finish(
                "error",
                "error",
                error=(
                    f"the chat template took more than {RENDER_LIMIT:g} s to render this conversation and was "
                    f"stopped (it may loop without end); {FIX_TEMPLATE}"
                ),
            )
        except PromptFormatError as error:
            return reply.finish("error", "error", error=str(error))
        except Exception as error:  # from the template: its own raise_exception (a ValueError), or any fault
            return reply.finish("error", "error", error=_template_failure(error))
        reply.notices = notices
        for notice in notices:
            self.send(Notice(notice))
        reply.prompt_tokens, reply.cached_tokens = len(tokens), self.loop.keep_prefix(tokens)
        self.send(PromptReady(reply.prompt_tokens, reply.cached_tokens))
        text = StreamedText(stops)
        sampler = Sampler(params, self.loop.n_vocab)
        token = -1
        try:
            while True:
                if self.cancel.is_set():
                    return reply.finish("cancelled", "cancelled", text.flush())
                # The first step evaluates the prompt (its uncached part, in one batch: on a
                # small machine each pass over the weights costs as much as a whole short
                # prompt), the others one token each.
                first = token < 0
                work = prefill_priority(self.card.params or 0, len(tokens) - reply.cached_tokens) if first else DECODE
                threads = plan.prompt_threads if first else plan.decode_threads
                self.lanes.acquire(self.slot, self.cancel, work, cores=threads)
                began = time.perf_counter()
                try:
                    self.use_threads(threads)
                    if first:
                        llama_cpp.llama_set_abort_callback(self.llm.ctx, self._abort, None)
                        self.loop.evaluate(tokens[reply.cached_tokens :])
                    else:
                        self.loop.step(token)
                    token = sampler.sample(self.llm.ctx)
                finally:
                    if first:
                        llama_cpp.llama_set_abort_callback(self.llm.ctx, self._no_abort, None)
                    self.lanes.release(self.slot)
                    reply.timed(first, threads, time.perf_counter() - began)
                if self.loop.is_end(token):
                    return reply.finish("done", "stop", text.flush())
                if reply.completion_tokens == 0:
                    reply.first_token = time.perf_counter()
                    self.send(FirstToken(reply.first_token - start))
                reply.completion_tokens += 1
                piece, at_stop_string = text.add(self.loop.piece(token))
                self.emit(piece)
                if at_stop_string:
                    return reply.finish("done", "stop", text.flush())
                if reply.completion_tokens >= params.max_tokens:
                    return reply.finish("done", "length", text.flush())
                if len(self.loop.kv) >= self.loop.n_ctx - 1:
                    return reply.finish("done", "context", text.flush())
        except Cancelled:
            return reply.finish("cancelled", "cancelled", text.flush())
        except DecodeError as error:  # llama_decode failed, or was aborted by a cancel
            if self.cancel.is_set():
                return reply.finish("cancelled", "cancelled", text.flush())
            return reply.finish("error", "error", text.flush(), error=f"llama.cpp failed: {error}")
        finally:
            sampler.close()


FIX_TEMPLATE = "give the card a working chat_template, or a chat_format such as chatml"


def _template_failure(error: Exception) -> str:
    if type(error) is ValueError:  # what the template itself raised, e.g. roles that do not alternate
        return f"the chat template refused this conversation: {error}"
    return f"the chat template failed ({type(error).__name__}: {error}); {FIX_TEMPLATE}"
