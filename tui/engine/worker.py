"""The worker process: one model, loaded once, serving turns until told to stop.

Runs in its own process so that a crash, an out-of-memory kill or a bad file ends only
this model. It keeps its KV cache between turns: each turn's prompt is the whole history
(made by `tui.engine.fitting`), and only the tokens after the longest prefix already in the
cache are evaluated. Each decode step (the prompt, then one token at a time) runs while
holding a lane from the shared `Lanes`, so the machine's cores are never oversubscribed.

Messages are plain dicts over two one-way pipes. In: {"op": "turn" | "score" | "cancel" |
"reset" | "stop", ...}. Out: {"ev": "ready" | "failed" | event name | "Scores", ...}.
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
from dataclasses import asdict, replace
from multiprocessing.connection import Connection
from typing import Any

from tui.cards import ModelCard
from tui.engine.decode import DecodeError, Sampler, TokenLoop, TokenRecord
from tui.engine.events import (
    Finished,
    FirstToken,
    Notice,
    PromptReady,
    SamplingParams,
    Scores,
    ScoreStatus,
    TextPiece,
    TurnEvent,
    TurnRequest,
)
from tui.engine.fitting import NotPrepared, PromptFitter
from tui.engine.memory import resident
from tui.engine.prompt import Prompt, PromptFormatError, formatter_for
from tui.engine.reply import ReplyCounter, StreamedText
from tui.engine.schedule import DECODE, Cancelled, Lanes, Plan, prefill_priority

TEXT_INTERVAL = 0.03
WORKER_NICE = 10  # a model's process priority: below the app's (0), as a batch job's is


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
    # The model yields the cores to the app that shows it: set before llama.cpp starts its threads, which
    # inherit it, so a key typed while every model computes is drawn at once (README, figure 4).
    os.setpriority(os.PRIO_PROCESS, 0, WORKER_NICE)
    # Ctrl+C in the terminal reaches every process in its group; the app decides what it means
    # (it cancels the turn), so the worker ignores it. The app started this process with SIGINT
    # blocked, so one that came while the modules were imported is discarded here, not acted on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # A tick of the render timer (see PromptFitter.interruptible) must never end the process.
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
        self.loop = TokenLoop(self.llm)
        self.cancel = threading.Event()  # the cancel of the request being served (see `run`)
        self.prompts = PromptFitter(self.llm, formatter_for(card, self.llm), lambda: self.cancel.is_set())
        self.turn_id = 0
        self.record: TokenRecord | None = None  # the turn's tokens and their log-probabilities, when asked
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
                if message["op"] in ("turn", "score"):
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
            elif message["op"] in ("turn", "score"):
                self.turn_id, self.cancel = message["id"], cancels[message["id"]]
                request, plan = request_from(message), Plan(**message["plan"])
                if message["op"] == "turn":
                    self.serve_turn(request, plan)
                else:
                    self.serve_score(request, message["continuations"], plan)
                del cancels[message["id"]]

    def serve_turn(self, request: TurnRequest, plan: Plan) -> None:
        """Run a turn, sending its events."""
        self.record = TokenRecord() if request.logprobs else None
        try:
            finished = self.turn(request, plan)
        except Exception as error:  # a fault in one turn fails that reply, not the model
            self.loop.reset()
            finished = ReplyCounter(time.perf_counter()).finish(
                "error", "error", error=f"the turn failed ({type(error).__name__}: {error}); try it again"
            )
        if self.record is not None:
            finished = replace(finished, tokens=self.record.tokens)
        self.emit("", tokens=0, final=True)
        self.send(finished)

    def serve_score(self, request: TurnRequest, continuations: list[str], plan: Plan) -> None:
        """Score continuations, sending the Scores."""
        try:
            scores = self.score(request, continuations, plan)
        except Exception as error:  # a fault in scoring fails that call, not the model
            self.loop.reset()
            scores = Scores("error", error=f"scoring failed ({type(error).__name__}: {error}); try it again")
        self.send(scores)

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

    def send(self, event: TurnEvent | Scores) -> None:
        self.events.send({"ev": type(event).__name__, "id": self.turn_id, **asdict(event)})

    # --- one turn -----------------------------------------------------------------------------

    def use_threads(self, threads: int) -> None:
        import llama_cpp

        if threads != self.threads:
            llama_cpp.llama_set_n_threads(self.llm.ctx, threads, threads)
            self.threads = threads

    @contextmanager
    def lane(self, work: int, threads: int, abortable: bool) -> Iterator[None]:
        """Hold `threads` cores of the shared lanes (raises Cancelled if cancelled while waiting),
        with llama.cpp running as many threads. `abortable`: a cancel also stops a decode under
        way, for prompt work only: llama.cpp asks between graph nodes, a Python call each time."""
        import llama_cpp

        self.lanes.acquire(self.slot, self.cancel, work, cores=threads)
        try:
            self.use_threads(threads)
            if abortable:
                llama_cpp.llama_set_abort_callback(self.llm.ctx, self._abort, None)
            yield
        finally:
            if abortable:
                llama_cpp.llama_set_abort_callback(self.llm.ctx, self._no_abort, None)
            self.lanes.release(self.slot)

    def turn(self, request: TurnRequest, plan: Plan) -> Finished:
        start = time.perf_counter()
        reply = ReplyCounter(start)
        params = request.params
        try:
            tokens, prompt, notices = self.prompts.prepare(request)
        except NotPrepared as failed:
            return reply.finish(failed.status, failed.status, error=failed.message)
        reply.notices = notices
        for notice in notices:
            self.send(Notice(notice))
        reply.prompt_tokens, reply.cached_tokens = len(tokens), self.loop.keep_prefix(tokens)
        self.send(PromptReady(reply.prompt_tokens, reply.cached_tokens))
        text = StreamedText([*prompt.stop, *request.stop])
        sampler = Sampler(params, self.loop.n_vocab)
        token = -1
        chosen: tuple[float, list[tuple[int, float]]] = (0.0, [])  # the token's log-probability and the likeliest
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
                with self.lane(work, threads, abortable=first):
                    began = time.perf_counter()
                    try:
                        if first:
                            self.loop.evaluate(tokens[reply.cached_tokens :])
                        else:
                            self.loop.step(token)
                        token = sampler.sample(self.llm.ctx)
                    finally:
                        reply.timed(first, threads, time.perf_counter() - began)
                    if self.record is not None:
                        # Read before the next step overwrites the logits, and left out of the step's
                        # time (which `auto` learns from): it is the cost of asking, not of the model.
                        chosen = self.loop.top_alternatives(token)
                if self.loop.is_end(token):
                    return reply.finish("done", "stop", text.flush())
                if reply.completion_tokens == 0:
                    reply.first_token = time.perf_counter()
                    self.send(FirstToken(reply.first_token - start))
                reply.completion_tokens += 1
                data = self.loop.piece(token)
                piece, at_stop_string = text.add(data)
                self.emit(piece)
                if self.record is not None:
                    alternatives = [(self.loop.piece(other, special=True), p) for other, p in chosen[1]]
                    self.record.add(data, chosen[0], alternatives)
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

    # --- scoring ------------------------------------------------------------------------------

    def score(self, request: TurnRequest, continuations: list[str], plan: Plan) -> Scores:
        """Each continuation's token log-probabilities after the request's prompt, as `turn` makes
        it: the prompt's uncached part evaluated once, as a turn's prompt step (and left in the
        cache, for a turn of the same request to reuse), then every continuation after it."""
        start = time.perf_counter()
        if not continuations or not all(continuations):
            return Scores("error", error="nothing to score: give at least one continuation, none of them empty")
        try:
            tokens, prompt, _ = self.prompts.prepare(request)
        except NotPrepared as failed:
            return Scores(failed.status, elapsed_s=time.perf_counter() - start, error=failed.message)
        special = request.completion is None
        targets = [self.continuation_tokens(prompt, tokens, special, text) for text in continuations]
        longest = max(len(target) for target in targets)
        if len(tokens) + longest > self.loop.n_ctx:
            return Scores(
                "error",
                prompt_tokens=len(tokens),
                elapsed_s=time.perf_counter() - start,
                error=(
                    f"the prompt is {len(tokens)} tokens and the longest continuation {longest}, but the context "
                    f"is {self.loop.n_ctx}; shorten them"
                ),
            )
        cached = self.loop.keep_prefix(tokens)
        work = prefill_priority(self.card.params or 0, len(tokens) - cached + sum(len(t) - 1 for t in targets))

        def ended(status: ScoreStatus, logprobs: list[list[float]], error: str | None = None) -> Scores:
            return Scores(status, logprobs, len(tokens), cached, time.perf_counter() - start, error)

        try:
            with self.lane(work, plan.prompt_threads, abortable=True):
                self.loop.evaluate(tokens[cached:])
                return ended("done", self.loop.score(tokens, targets))
        except Cancelled:
            return ended("cancelled", [])
        except DecodeError as error:  # llama_decode failed, or was aborted by a cancel
            if self.cancel.is_set():
                return ended("cancelled", [])
            return ended("error", [], f"llama.cpp failed: {error}")

    def continuation_tokens(self, prompt: Prompt, tokens: list[int], special: bool, continuation: str) -> list[int]:
        """A continuation's tokens as they follow the prompt in running text: the two tokenised
        together, less the prompt's `tokens`; alone where the join merges tokens across it (the
        prompt's tokens are then not a prefix of the whole's)."""
        joined = self.prompts.tokenize(prompt.text + continuation, prompt.add_bos, special)
        if joined[: len(tokens)] == tokens:
            return joined[len(tokens) :]
        return self.prompts.tokenize(continuation, add_bos=False, special=special)


def request_from(message: dict[str, Any]) -> TurnRequest:
    """The request of a "turn" or "score" message (see `LocalModel._start`)."""
    return TurnRequest(
        message["messages"],
        SamplingParams(**message["params"]),
        message["completion"],
        tuple(message["stop"]),
        message.get("logprobs", False),
    )
