"""What callers send to a model and what comes back, whatever the backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    seed: int | None = None  # None: a fresh seed each turn, recorded with the reply

    def with_changes(self, changes: dict[str, Any]) -> SamplingParams:
        """These parameters with some replaced; values are converted and checked."""
        return replace(self, **{name: _checked(name, value) for name, value in changes.items()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_LIMITS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 5.0),
    "top_p": (0.0, 1.0),
    "top_k": (0, 100_000),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.5, 3.0),
    "max_tokens": (1, 1_000_000),
    "seed": (0, 2**31 - 1),
}
PARAM_NAMES = tuple(f.name for f in fields(SamplingParams))


def _checked(name: str, value: Any) -> Any:
    if name not in _LIMITS:
        raise ValueError(f"unknown sampling parameter '{name}' (known: {', '.join(PARAM_NAMES)})")
    if name == "seed" and value in (None, "", "random"):
        return None
    kind = int if name in ("top_k", "max_tokens", "seed") else float
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}, not {value!r}") from None
    low, high = _LIMITS[name]
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {number}")
    return number


@dataclass(frozen=True)
class TurnRequest:
    messages: list[Message]
    params: SamplingParams  # seed already chosen
    # The completion form: text the model continues as it is, with no chat template (how a base
    # model is asked, few-shot, BIG-bench style). When given, `messages` are not used.
    completion: str | None = None
    stop: tuple[str, ...] = ()  # stop strings besides the model's own and its chat format's
    # Record each token's log-probability and its likeliest alternatives (`Finished.tokens`): off
    # unless asked, as it costs a log-softmax over the vocabulary per token.
    logprobs: bool = False


ScoreStatus = Literal["done", "cancelled", "error", "unavailable"]


@dataclass(frozen=True)
class Scores:
    """The log-probability of each token of given continuations after one prompt, computed by
    teacher forcing (the prompt evaluated once, its KV cache reused for every continuation).
    "unavailable": the backend cannot score (a server whose API returns no prompt log-probs)."""

    status: ScoreStatus
    logprobs: list[list[float]] = field(default_factory=list)  # per continuation, one per token
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt, reused from the KV cache
    elapsed_s: float = 0.0
    error: str | None = None  # why it failed, or why it is unavailable


# --- events streamed back during a turn --------------------------------------------------------


@dataclass(frozen=True)
class PromptReady:
    """The prompt is tokenised; `cached_tokens` of it are reused from the KV cache."""

    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class Notice:
    """Something the user should know about this reply (e.g. old turns trimmed)."""

    message: str


@dataclass(frozen=True)
class FirstToken:
    """The first token of the reply exists; `ttft_s` counts from the turn's start."""

    ttft_s: float


@dataclass(frozen=True)
class TextPiece:
    text: str
    tokens: int = 1  # how many tokens it holds (workers send text in batches)


@dataclass(frozen=True)
class StepTimes:
    """How long a local reply's steps took while holding their cores, and on how many."""

    prompt_s: float | None = None  # the prompt's (uncached part's) evaluation and first sample
    prompt_threads: int = 0
    decode_s: float | None = None  # the mean one-token step: decode and sample
    decode_threads: int = 0


Status = Literal["done", "cancelled", "error"]
STATUSES: tuple[Status, ...] = ("done", "cancelled", "error")


@dataclass(frozen=True)
class Finished:
    """Always the last event of a turn."""

    status: Status
    finish_reason: str  # "stop", "length", "context", "cancelled", "error"
    text: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float = 0.0
    error: str | None = None
    notices: list[str] = field(default_factory=list)
    # A remote reply: the server's host, model and report of itself, and how tokens were counted.
    remote: dict[str, Any] | None = None
    steps: StepTimes | None = None  # a local reply's step times
    schedule: str | None = None  # the CPU schedule a local reply ran under (auto chooses one per turn)
    # With `TurnRequest.logprobs`: per token of the reply, [text, logprob, [[alternative text, logprob], ...]]
    # (see `tui.engine.decode.TokenRecord`); None when not asked, or when a server returned none.
    tokens: list[list[Any]] | None = None


TurnEvent = PromptReady | Notice | FirstToken | TextPiece | Finished
