"""Scenarios: a system prompt, opening turns, suggested parameters, and items with
checks, that turn a blank chat into a ready experiment.

Built-ins ship in the package (`tui/scenarios/*.yaml`); users add theirs in
`<config dir>/scenarios/`, where one with a built-in id replaces it. A bad file is
reported in one line naming the file and the field; the others still load.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tui import paths
from tui.cards import ID_PATTERN
from tui.checks import CHECKS, Item
from tui.engine.events import SamplingParams
from tui.labels import CHOICE_LETTERS
from tui.yamlfile import YamlFileError, read_yaml

CHOICE_INSTRUCTION = "Answer with the letter of your choice."


class ScenarioError(ValueError):
    """A scenario field is wrong; the message names the field."""


@dataclass(frozen=True)
class Variant:
    label: str
    prefix: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    description: str
    system: str = ""
    opening: tuple[tuple[str, str], ...] = ()  # few-shot user/assistant pairs, part of every history
    first_turn: str | None = None  # a user message sent as soon as the scenario starts
    params: dict[str, Any] = field(default_factory=dict)
    check: str | None = None  # the check run on every reply
    items: tuple[Item, ...] = ()
    variants: tuple[Variant, ...] = ()  # each item is asked once per variant
    generate: str | None = None  # a generator of fresh items, e.g. "arithmetic"
    # Each item is asked with only the system prompt and opening turns as history, so
    # that earlier items (and the same question in another variant) do not help or
    # hinder; a role-play whose state must carry over (the terminal) sets this false.
    fresh_context: bool = True
    origin: str = ""

    @property
    def has_items(self) -> bool:
        return bool(self.items or self.generate)

    @property
    def item_count(self) -> int | None:
        """How many items there are; None when they are generated without end."""
        return None if self.generate else len(self.items) * max(len(self.variants), 1)

    def item(self, n: int, rng: random.Random) -> Item:
        """Item number `n` (from 0); lists wrap around, generators make a fresh one."""
        if self.generate:
            return GENERATORS[self.generate](n, rng)
        variants = self.variants or (Variant(""),)
        base = self.items[(n // len(variants)) % len(self.items)]
        variant = variants[n % len(variants)]
        prompt = base.prompt
        if base.choices:
            lettered = zip(CHOICE_LETTERS, base.choices, strict=False)  # the parser allows no more choices than letters
            options = "\n".join(f"{letter}. {choice}" for letter, choice in lettered)
            prompt += f"\n{options}\n{CHOICE_INSTRUCTION}"
        prompt = "\n\n".join(part for part in (variant.prefix, prompt, variant.suffix) if part)
        return Item(
            prompt=prompt,
            answer=base.answer,
            accept=base.accept,
            regex=base.regex,
            choices=base.choices,
            number=base.number,
            stereotyped=base.stereotyped,
            unknown=base.unknown,
            variant=variant.label or None,
            index=n + 1,
        )

    def header(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "check": self.check,
            "params": self.params,
            "fresh_context": self.fresh_context,
            "opening": [list(pair) for pair in self.opening],
            "first_turn": self.first_turn,
            "items": self.item_count,
        }


def arithmetic(n: int, rng: random.Random) -> Item:
    """Alternately three-digit addition and two-digit multiplication, fresh operands each time."""
    if n % 2 == 0:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        question, value, variant = f"What is {a} + {b}?", a + b, "3-digit addition"
    else:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        question, value, variant = f"What is {a} * {b}?", a * b, "2-digit multiplication"
    return Item(
        prompt=f"{question} Answer with the number only.", answer=str(value), number=value, variant=variant, index=n + 1
    )


GENERATORS = {"arithmetic": arithmetic}

# --- reading scenario files ------------------------------------------------------------------

FIELDS = {
    "id",
    "title",
    "description",
    "system",
    "opening",
    "params",
    "check",
    "items",
    "variants",
    "generate",
    "fresh_context",
}
ITEM_FIELDS = {"prompt", "answer", "accept", "regex", "choices", "number", "stereotyped", "unknown"}


def _text(data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise ScenarioError(f"field '{where}{key}' must be text" + (" and is missing" if key not in data else ""))
    return value


def _texts(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ScenarioError(f"field '{where}{key}' must be a list of texts")
    return tuple(str(v) for v in value)


def _item(raw: Any, n: int, check: str | None) -> Item:
    where = f"items[{n}]."
    if not isinstance(raw, dict):
        raise ScenarioError(f"field 'items[{n}]' must be a mapping with at least 'prompt'")
    unknown = sorted(set(raw) - ITEM_FIELDS)
    if unknown:
        raise ScenarioError(f"field '{where}{unknown[0]}' is not an item field")
    number = raw.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
        raise ScenarioError(f"field '{where}number' must be a number")
    for key in ("answer", "stereotyped", "regex"):
        if raw.get(key) is not None and not isinstance(raw[key], (str, int, float)) or isinstance(raw.get(key), bool):
            raise ScenarioError(f"field '{where}{key}' must be text (quote yes/no/true/false in YAML)")
    for key in ("accept", "choices", "unknown"):
        if any(isinstance(value, bool) for value in raw.get(key) or []):
            raise ScenarioError(f"field '{where}{key}' must be texts (quote yes/no/true/false in YAML)")
    if raw.get("regex") is not None:
        try:
            re.compile(str(raw["regex"]))
        except re.error as error:
            raise ScenarioError(f"field '{where}regex' is not a valid pattern: {error}") from None
    item = Item(
        prompt=_text(raw, "prompt", where),
        answer=None if raw.get("answer") is None else str(raw["answer"]),
        accept=_texts(raw, "accept", where),
        regex=raw.get("regex"),
        choices=_texts(raw, "choices", where),
        number=number,
        stereotyped=None if raw.get("stereotyped") is None else str(raw["stereotyped"]),
        unknown=_texts(raw, "unknown", where),
    )
    if len(item.choices) > len(CHOICE_LETTERS):
        raise ScenarioError(f"field '{where}choices' may have at most {len(CHOICE_LETTERS)} options, one per letter")
    if check == "choice" and item.answer not in item.choices:
        raise ScenarioError(f"field '{where}answer' must be one of its choices")
    if check == "number" and item.number is None:
        raise ScenarioError(f"field '{where}number' is needed by the number check")
    if check == "answer" and not (item.answer or item.accept or item.regex):
        raise ScenarioError(f"field '{where}answer' is needed by the answer check")
    if check == "unbiased" and not item.stereotyped:
        raise ScenarioError(f"field '{where}stereotyped' is needed by the unbiased check")
    return item


def parse_scenario(data: Any, origin: str) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("the file must be a mapping of scenario fields")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ScenarioError(f"field '{unknown[0]}' is not a scenario field (known: {', '.join(sorted(FIELDS))})")
    scenario_id = _text(data, "id", "")
    if not ID_PATTERN.match(scenario_id):
        raise ScenarioError(f"field 'id' must be lower-case letters, digits, '.', '_' or '-', not {scenario_id!r}")
    check = data.get("check")
    if check is not None and check not in CHECKS:
        raise ScenarioError(f"field 'check' must be one of {', '.join(CHECKS)}, not {check!r}")
    generate = data.get("generate")
    if generate is not None and generate not in GENERATORS:
        raise ScenarioError(f"field 'generate' must be one of {', '.join(GENERATORS)}, not {generate!r}")
    params = data.get("params", {})
    try:
        SamplingParams().with_changes(params if isinstance(params, dict) else {"params": params})
    except ValueError as error:
        raise ScenarioError(f"field 'params': {error}") from None
    opening, first_turn = [], None
    raw_opening = data.get("opening", [])
    if not isinstance(raw_opening, list):
        raise ScenarioError("field 'opening' must be a list of {user, assistant} turns")
    for n, turn in enumerate(raw_opening):
        if not isinstance(turn, dict) or not isinstance(turn.get("user"), str):
            raise ScenarioError(f"field 'opening[{n}].user' must be text")
        if "assistant" in turn:
            opening.append((turn["user"], _text(turn, "assistant", f"opening[{n}].")))
        elif n == len(raw_opening) - 1:
            first_turn = turn["user"]
        else:
            raise ScenarioError(f"field 'opening[{n}].assistant' is missing (only the last turn may go without)")
    raw_items = data.get("items", [])
    if not isinstance(raw_items, list):
        raise ScenarioError("field 'items' must be a list")
    variants = []
    if not isinstance(data.get("variants", []) or [], list):
        raise ScenarioError("field 'variants' must be a list of {label, prefix, suffix}")
    for n, raw in enumerate(data.get("variants", []) or []):
        if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
            raise ScenarioError(f"field 'variants[{n}].label' must be text")
        variants.append(Variant(raw["label"], str(raw.get("prefix", "")), str(raw.get("suffix", ""))))
    return Scenario(
        id=scenario_id,
        title=_text(data, "title", ""),
        description=" ".join(_text(data, "description", "").split()),
        system=_text(data, "system", "", default=""),
        opening=tuple(opening),
        first_turn=first_turn,
        params=dict(params),
        check=check,
        items=tuple(_item(raw, n, check) for n, raw in enumerate(raw_items)),
        variants=tuple(variants),
        generate=generate,
        fresh_context=_flag(data, "fresh_context", True),
        origin=origin,
    )


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ScenarioError(f"field '{key}' must be true or false")
    return value


def builtin_dir() -> Path:
    return Path(str(resources.files("tui") / "scenarios"))


def user_dir() -> Path:
    return paths.config_dir() / "scenarios"


def load_scenarios(folders: list[Path] | None = None) -> tuple[dict[str, Scenario], list[str]]:
    """Scenarios by id (later folders win), and one line per file that could not be read."""
    scenarios: dict[str, Scenario] = {}
    problems: list[str] = []
    for folder in folders if folders is not None else [builtin_dir(), user_dir()]:
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            try:
                scenario = parse_scenario(read_yaml(path), str(path))
            except (ScenarioError, YamlFileError) as error:
                problems.append(f"{path}: {error}")
                continue
            scenarios[scenario.id] = scenario
    return scenarios, problems
