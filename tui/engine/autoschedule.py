"""The `auto` schedule: for each turn, the CPU policy that this machine's own measurements
predict to be fastest.

Every local reply reports its step times, measured while holding its cores (`StepTimes`).
`StepStore` keeps, per machine, model and thread count, an exponentially weighted mean of a
one-token step and of a prompt's time per token, in the cache, so a later session starts
informed. `choose` predicts how long the running models take to decode a token each under
each policy, and picks the shortest:

- `baton`: one model at a time on every core: the sum of their all-core steps;
- `mixed` and `split`: `cores // share` models at once on `share` cores each: at least the
  sum of their share-core steps over that many lanes, and at least the slowest one alone.

`mixed` and `split` decode alike and differ only in prompts, which are compute-bound: `mixed`
runs them on every core, `split` on a share each, side by side. So `mixed` is preferred unless
the measured prompt times say `split`'s are shorter. A policy that lacks a measurement for a
running model is run first, so the first turns of a lineup measure each.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui import paths
from tui.cards import ModelCard
from tui.engine.events import Finished
from tui.engine.schedule import AUTO, POLICIES, Policy, share_of

WEIGHT = 0.3  # of a new reply in the weighted means: recent replies count most, one noisy reply little
FILE_VERSION = 1


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo's when there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(cores: int) -> str:
    return f"{cpu_model()} · {cores} cores"


def model_key(card: ModelCard) -> str:
    """A model's identity in the store: its file's hash, so a renamed card keeps what was learnt."""
    return card.sha256 or card.id


@dataclass
class ModelSteps:
    """What this machine measured of one model, by thread count."""

    model: str = ""  # the card's id, for a person reading the file
    replies: int = 0  # how many replies taught it
    decode_s: dict[int, float] = field(default_factory=dict)  # a one-token step (decode and sample)
    prompt_s_per_token: dict[int, float] = field(default_factory=dict)  # a prompt's evaluation, per token
    prompt_tokens: float = 0.0  # the tokens a turn's prompt evaluates (not those cached)

    def learn(self, finished: Finished) -> bool:
        """Add a reply's step times; whether it had any."""
        steps = finished.steps
        if steps is None:
            return False
        learnt = False
        if steps.decode_s and steps.decode_threads:
            _add(self.decode_s, steps.decode_threads, steps.decode_s)
            learnt = True
        evaluated = finished.prompt_tokens - finished.cached_tokens
        if steps.prompt_s and steps.prompt_threads and evaluated > 0:
            _add(self.prompt_s_per_token, steps.prompt_threads, steps.prompt_s / evaluated)
            self.prompt_tokens = _mean(self.prompt_tokens, evaluated)
            learnt = True
        self.replies += learnt
        return learnt

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "replies": self.replies,
            "decode_s": {str(threads): s for threads, s in sorted(self.decode_s.items())},
            "prompt_s_per_token": {str(threads): s for threads, s in sorted(self.prompt_s_per_token.items())},
            "prompt_tokens": self.prompt_tokens,
        }

    @classmethod
    def from_json(cls, raw: Any) -> ModelSteps:
        """Raises ValueError for anything `to_json` did not write."""
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
            raise ValueError("not a model's step times")
        replies = raw.get("replies")
        if not isinstance(replies, int) or isinstance(replies, bool) or replies < 0:
            raise ValueError("bad count of replies")
        return cls(
            model=raw["model"],
            replies=replies,
            decode_s=_table(raw.get("decode_s")),
            prompt_s_per_token=_table(raw.get("prompt_s_per_token")),
            prompt_tokens=_seconds(raw.get("prompt_tokens", 0.0), zero=True),
        )


def _mean(old: float, new: float) -> float:
    return new if old <= 0 else (1 - WEIGHT) * old + WEIGHT * new


def _add(table: dict[int, float], threads: int, seconds: float) -> None:
    table[threads] = _mean(table.get(threads, 0.0), seconds)


def _seconds(value: Any, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a number")
    if value < 0 or (value == 0 and not zero):
        raise ValueError("not a positive number")
    return float(value)


def _table(raw: Any) -> dict[int, float]:
    if not isinstance(raw, dict):
        raise ValueError("not a table of thread counts")
    table = {int(threads): _seconds(seconds) for threads, seconds in raw.items()}
    if any(threads < 1 for threads in table):
        raise ValueError("not a thread count")
    return table


class StepStore:
    """The step times measured on this machine (its CPU and core count), kept in the cache.

    Each reply learnt is written at once, over the file as it is then: models that another
    app learnt meanwhile are kept. A damaged file is ignored (the next reply learnt rewrites
    it); one that cannot be written leaves what this session learnt in memory."""

    def __init__(self, cores: int, path: Path | None = None) -> None:
        self.path = path or paths.cache_dir() / "schedule.json"
        self.machine = machine_key(cores)
        self.models = self._machine_models(self._read())

    def learn(self, card: ModelCard, finished: Finished) -> None:
        key = model_key(card)
        entry = self.models.get(key) or ModelSteps(model=card.id)
        if not entry.learn(finished):
            return
        data = self._read()
        self.models = {**self._machine_models(data), **self.models, key: entry}
        machines = data.get("machines")
        machines = machines if isinstance(machines, dict) else {}
        machines[self.machine] = {key: steps.to_json() for key, steps in self.models.items()}
        self._write({"version": FILE_VERSION, "machines": machines})

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # missing, unreadable or damaged: start afresh
            return {}
        return data if isinstance(data, dict) and data.get("version") == FILE_VERSION else {}

    def _machine_models(self, data: dict[str, Any]) -> dict[str, ModelSteps]:
        machines = data.get("machines")
        raw = machines.get(self.machine) if isinstance(machines, dict) else None
        models: dict[str, ModelSteps] = {}
        for key, entry in (raw if isinstance(raw, dict) else {}).items():
            try:
                models[key] = ModelSteps.from_json(entry)
            except ValueError:  # a damaged entry: as if never measured
                continue
        return models

    def _write(self, data: dict[str, Any]) -> None:
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(data, indent=1))
            os.replace(temporary, self.path)
        except OSError:  # a full or read-only cache: this session still uses what it learnt
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class Choice:
    """The policy a turn runs, and why in words (the title line shows them)."""

    policy: Policy
    note: str
    models: int = 1  # how many models were running when it was chosen
    predicted: dict[str, float] = field(default_factory=dict)  # seconds for a token of each model, by policy


def fixed(policy: Policy, models: int) -> Choice:
    """The choice of a fixed policy: itself."""
    return Choice(policy, policy.name, models)


def side_by_side(seconds: list[float], lanes: int) -> float:
    """How long steps of these lengths take, run on `lanes` lanes at once: at least their sum
    over the lanes, and at least the longest alone."""
    return max(sum(seconds) / lanes, max(seconds))


def choose(known: dict[str, ModelSteps], keys: list[str], cores: int) -> Choice:
    """The policy for a turn of the models `keys` (one per running model), from the step times
    `known`: the first policy that lacks a measurement, else the fastest predicted."""
    models = max(len(keys), 1)
    share = share_of(models, cores)
    if share == cores:
        alone = "one model" if models == 1 else "one core"
        return Choice(POLICIES["baton"], f"{AUTO} → baton ({alone}: every policy runs the same)", models)
    steps = [known.get(key) or ModelSteps() for key in keys]
    for name, what, threads, tables in (
        ("baton", "step", cores, [s.decode_s for s in steps]),
        ("mixed", "step", share, [s.decode_s for s in steps]),
        ("split", "prompt", share, [s.prompt_s_per_token for s in steps]),
    ):
        if any(threads not in table for table in tables):
            return Choice(POLICIES[name], f"{AUTO} → {name} (measuring: no {threads}-core {what} times yet)", models)
    lanes = cores // share
    predicted = {
        "baton": side_by_side([s.decode_s[cores] for s in steps], 1),
        "mixed": side_by_side([s.decode_s[share] for s in steps], lanes),
    }
    # The prompts' time (of as many tokens as they usually evaluate): mixed runs them as baton does.
    prompts = {"split": side_by_side([s.prompt_s_per_token[share] * s.prompt_tokens for s in steps], lanes)}
    if all(cores in s.prompt_s_per_token for s in steps):
        prompts["mixed"] = side_by_side([s.prompt_s_per_token[cores] * s.prompt_tokens for s in steps], 1)
    side = "split" if prompts["split"] < prompts.get("mixed", 0.0) else "mixed"
    predicted["split"] = predicted["mixed"]
    turns = f"from {min(s.replies for s in steps)} turns here"
    if predicted["baton"] <= predicted["mixed"]:
        note = f"predicted {predicted['baton'] / predicted['mixed']:.2f}× {side}, {turns}"
        return Choice(POLICIES["baton"], f"{AUTO} → baton ({note})", models, predicted)
    note = f"predicted {predicted['mixed'] / predicted['baton']:.2f}× baton"
    if side == "split":
        note += f", prompts {prompts['split'] / prompts['mixed']:.2f}× mixed's"
    return Choice(POLICIES[side], f"{AUTO} → {side} ({note}, {turns})", models, predicted)
