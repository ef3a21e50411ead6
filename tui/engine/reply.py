"""One reply as a worker builds it: its counts and clocks, and its text as the model's bytes
stream in (whole characters only, stop strings cut off)."""

from __future__ import annotations

import codecs
import time

from tui.engine.events import Finished, Status, StepTimes


class ReplyCounter:
    """Counts and clocks for one reply; `finish` makes its last event."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.first_token: float | None = None
        self.prompt_tokens = self.cached_tokens = self.completion_tokens = 0
        self.notices: list[str] = []
        self.prompt_s: float | None = None  # the prompt step, holding its cores
        self.prompt_threads = self.decode_threads = 0
        self.decode_s = 0.0  # the one-token steps, holding their cores
        self.decode_steps = 0

    def timed(self, prompt: bool, threads: int, seconds: float) -> None:
        """A step's own time (not the wait for its cores): what an automatic schedule learns from."""
        if prompt:
            self.prompt_s, self.prompt_threads = seconds, threads
        else:
            self.decode_s += seconds
            self.decode_steps += 1
            self.decode_threads = threads

    def finish(self, status: Status, reason: str, text: str = "", error: str | None = None) -> Finished:
        end = time.perf_counter()
        rate = None
        if self.first_token is not None and self.completion_tokens > 1 and end > self.first_token:
            rate = (self.completion_tokens - 1) / (end - self.first_token)
        return Finished(
            status=status,
            finish_reason=reason,
            text=text,
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            completion_tokens=self.completion_tokens,
            ttft_s=None if self.first_token is None else self.first_token - self.start,
            tokens_per_s=rate,
            elapsed_s=end - self.start,
            error=error,
            notices=self.notices,
            steps=StepTimes(
                prompt_s=self.prompt_s,
                prompt_threads=self.prompt_threads,
                decode_s=self.decode_s / self.decode_steps if self.decode_steps else None,
                decode_threads=self.decode_threads,
            ),
        )


class StreamedText:
    """Bytes from the model in, printable text out: whole UTF-8 characters only, with
    stop strings cut off, and text that might be the start of a stop string held back."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""
        self.text = ""

    def add(self, data: bytes) -> tuple[str, bool]:
        self.held += self.decoder.decode(data)
        if not self.text:
            self.held = self.held.lstrip()  # replies start at their first visible character
        hits = [self.held.find(stop) for stop in self.stops if stop in self.held]
        if hits:
            self.held = self.held[: min(hits)]
            return self._emit(len(self.held)), True
        keep = max((n for stop in self.stops for n in range(1, len(stop)) if self.held.endswith(stop[:n])), default=0)
        return self._emit(len(self.held) - keep), False

    def _emit(self, n: int) -> str:
        piece, self.held = self.held[:n], self.held[n:]
        self.text += piece
        return piece

    def flush(self) -> str:
        self.held += self.decoder.decode(b"", final=True)
        self._emit(len(self.held))
        return self.text.rstrip()
