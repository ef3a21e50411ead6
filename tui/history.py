"""A saved session read back turn by turn: what the sessions screen, `ladder sessions`,
exports, resume and replay all work from.

Built from the transcript's events, so it shows what was saved, also for models that
were added or removed mid-session, and settings that changed on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.blind import Blind
from tui.checks import CheckResult, Score
from tui.engine.events import STATUSES, Finished, SamplingParams, Status
from tui.transcript import Transcript, read_transcript


def saved_params(saved: Any, fallback: SamplingParams | None = None) -> SamplingParams:
    """Sampling parameters as a transcript recorded them (a header's or a settings event's
    `params`); missing or damaged: `fallback`, else the defaults."""
    try:
        return SamplingParams().with_changes(saved if isinstance(saved, dict) else {})
    except (TypeError, ValueError):
        return fallback or SamplingParams()


@dataclass
class Reply:
    model: str
    status: str
    text: str
    event: dict[str, Any]  # the whole reply event: tokens, timings, parameters, check
    best: bool = False
    notes: list[str] = field(default_factory=list)
    tokens: list[list[Any]] | None = None  # its token probabilities, if recorded (see `TokenRecord`)

    @property
    def check(self) -> dict[str, Any] | None:
        check = self.event.get("check")
        return check if isinstance(check, dict) else None

    def finished(self) -> Finished:
        """The reply as the engine reported it, to show it again."""
        event = self.event

        def number(key: str) -> Any:
            value = event.get(key)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        status: Status = next((known for known in STATUSES if known == self.status), "error")
        return Finished(
            status=status,
            finish_reason=str(event.get("finish_reason") or status),
            text=self.text,
            prompt_tokens=number("prompt_tokens") or 0,
            cached_tokens=number("cached_tokens") or 0,
            completion_tokens=number("completion_tokens") or 0,
            ttft_s=number("ttft_s"),
            tokens_per_s=number("tokens_per_s"),
            elapsed_s=number("elapsed_s") or 0.0,
            error=event.get("error") if isinstance(event.get("error"), str) else None,
            notices=[n for n in _list(event.get("notices")) if isinstance(n, str)],
            remote=event["remote"] if isinstance(event.get("remote"), dict) else None,
        )

    def check_result(self) -> CheckResult | None:
        check = self.check
        if check is None:
            return None
        return CheckResult(str(check.get("kind", "")), bool(check.get("passed")), str(check.get("reason", "")))


@dataclass
class Turn:
    number: int
    text: str
    item: dict[str, Any] | None = None
    replies: dict[str, Reply] = field(default_factory=dict)  # by model id
    notes: list[str] = field(default_factory=list)  # notes on the turn as a whole


@dataclass
class SessionRecord:
    transcript: Transcript
    models: list[dict[str, Any]]  # cards as saved, smallest first, including models added later
    turns: list[Turn]
    settings: dict[str, Any]  # the latest params, model_params, system prompt, few-shot and logprobs settings
    blind: Blind | None = None  # a blind session: its order, and the votes, guess and reveal saved

    @property
    def id(self) -> str:
        return self.transcript.id

    def reply(self, turn: int, model: str) -> Reply | None:
        """Model `model`'s saved reply to user turn `turn` (from 1), if there is one."""
        return self.turns[turn - 1].replies.get(model) if 0 < turn <= len(self.turns) else None

    @property
    def path(self) -> Path:
        return self.transcript.path

    @property
    def header(self) -> dict[str, Any]:
        return self.transcript.header

    @property
    def problems(self) -> list[str]:
        return self.transcript.problems

    @property
    def scenario_id(self) -> str | None:
        scenario = self.header.get("scenario")
        return scenario.get("id") if isinstance(scenario, dict) else None

    @property
    def created(self) -> str:
        return str(self.header.get("created", ""))

    def model(self, model_id: str) -> dict[str, Any]:
        return next((card for card in self.models if card.get("id") == model_id), {"id": model_id, "name": model_id})

    def scores(self) -> dict[str, Score]:
        """Per model: checks passed of replies checked, overall and by item variant."""
        scores: dict[str, Score] = {}
        for turn in self.turns:
            variant = turn.item.get("variant") if turn.item else None
            for model_id, reply in turn.replies.items():
                result = reply.check_result()
                if result is not None:
                    scores.setdefault(model_id, Score()).add(result, variant if isinstance(variant, str) else None)
        return scores


def _size_order(value: Any) -> tuple[int, int]:
    """A saved card's place in the lineup: by parameter count, unknown sizes (remote models) last."""
    try:
        return (0, int(value))
    except (TypeError, ValueError, OverflowError):
        return (1, 0)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _token_probs(value: Any) -> list[list[Any]] | None:
    """A `token_probs` event's tokens, each [text, logprob, [[text, logprob], ...]]; None if any is not."""

    def text_and_number(item: Any) -> bool:
        return (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], (int, float))
            and not isinstance(item[1], bool)
        )

    tokens = _list(value)
    for token in tokens:
        if not (isinstance(token, list) and len(token) == 3 and text_and_number(token[:2])):
            return None
        if not isinstance(token[2], list) or not all(map(text_and_number, token[2])):
            return None
    return [[text, float(logprob), [[alt, float(p)] for alt, p in alts]] for text, logprob, alts in tokens] or None


def _blind(saved: Any) -> Blind | None:
    """A header's `blind` ({"order": [model ids, A first], "seed": S}); None if absent or damaged."""
    if not isinstance(saved, dict):
        return None
    order, seed = saved.get("order"), saved.get("seed")
    if not isinstance(order, list) or not all(isinstance(model_id, str) for model_id in order):
        return None
    return Blind(order, seed if isinstance(seed, int) and not isinstance(seed, bool) else 0)


def _add_judgement(blind: Blind | None, kind: Any, turn: int, event: dict[str, Any]) -> bool:
    """Add a vote, guess or reveal event to the session's `blind` record; whether it could be read."""
    if blind is None:  # such events outside a blind session are not ours to show
        return True
    if kind == "reveal":
        blind.revealed = True
    elif kind == "vote" and isinstance(event.get("choice"), str):
        blind.votes[turn] = event["choice"]  # a turn voted on again: the last vote counts
    elif kind == "guess" and isinstance(event.get("model"), str):
        blind.guess = event["model"]
    else:
        return False
    return True


def build_record(transcript: Transcript) -> SessionRecord:
    header = transcript.header
    models = [card for card in _list(header.get("models")) if isinstance(card, dict)]
    settings = {key: header.get(key) for key in ("params", "model_params", "system", "few_shot", "logprobs")}
    blind = _blind(header.get("blind"))
    turns: dict[int, Turn] = {}
    wrong = 0  # events whose fields have the wrong type, left out
    for event in transcript.events:
        kind, number, model = event.get("type"), event.get("turn"), event.get("model")
        if not isinstance(number, int) or isinstance(number, bool):
            wrong += number is not None or kind in ("user", "reply", "mark", "note", "token_probs", "vote", "guess")
            number = None
        if model is not None and not isinstance(model, str):
            wrong += 1
        if kind == "user" and number is not None and number not in turns:
            item = event.get("item")
            turns[number] = Turn(number, str(event.get("text", "")), item if isinstance(item, dict) else None)
        elif kind == "reply" and number in turns and isinstance(model, str):
            earlier = turns[number].replies.get(model)
            reply = Reply(model, str(event.get("status", "")), str(event.get("text", "")), event)
            if earlier is not None:  # the same reply saved twice: keep its marks and notes
                reply.best, reply.notes = earlier.best, earlier.notes
            turns[number].replies[model] = reply
        elif kind == "token_probs" and number in turns and isinstance(model, str):
            tokens = _token_probs(event.get("tokens"))
            probed = turns[number].replies.get(model)
            if tokens is None or probed is None:
                wrong += 1
            else:
                probed.tokens = tokens
        elif kind == "models":
            known = {card.get("id") for card in models}
            models += [
                card for card in _list(event.get("added")) if isinstance(card, dict) and card.get("id") not in known
            ]
        elif kind == "settings":
            settings.update({key: event.get(key) for key in settings if key in event})
        elif kind in ("vote", "guess", "reveal") and number is not None and (model is None or isinstance(model, str)):
            wrong += not _add_judgement(blind, kind, number, event)
        elif kind in ("mark", "note") and number in turns:
            marked = turns[number].replies.get(model) if isinstance(model, str) else None
            if kind == "mark" and marked is not None:
                marked.best = bool(event.get("best", True))
            elif kind == "note":
                (marked.notes if marked is not None else turns[number].notes).append(str(event.get("text", "")))
    models.sort(key=lambda card: _size_order(card.get("params")))
    if wrong:
        transcript.problems.append(f"{transcript.path.name}: {wrong} event(s) with fields of the wrong type; left out")
    if header.get("models") is not None and not isinstance(header.get("models"), list):
        transcript.problems.append(f"{transcript.path.name}: the header's models are not a list of model cards")
    if header.get("blind") is not None and blind is None:
        transcript.problems.append(f"{transcript.path.name}: the header's blind order is not a list of model ids")
    return SessionRecord(transcript, models, [turns[n] for n in sorted(turns)], settings, blind)


def load_record(path: Path) -> SessionRecord:
    """A session from its transcript; damage is listed in `.problems`, never raised."""
    return build_record(read_transcript(path))
