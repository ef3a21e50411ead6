"""Lab tasks: the scenarios that have items and a check with a right answer, turned into the
items a lab asks, the prompt each model gets (chat, or few-shot completion for base models),
and the answers whose probability is scored.

A task asks the first N items of its scenario (or N generated ones, from the run's seed), each
in every variant. Few-shot prompts show solved items that are not asked in the run, the same
for every item, so the shared prompt prefix stays in each model's KV cache.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from tui.cards import ModelCard
from tui.checks import ITEM_CHECKS, Item, last_number
from tui.engine.events import Message, SamplingParams, TurnRequest
from tui.labels import CHOICE_LETTERS
from tui.scenario import GENERATORS, Scenario, Variant

FORMS = ("chat", "few-shot")
DEFAULT_TASKS = ("emoji-movie", "emoji-movie-choices", "arithmetic", "unscramble", "ipa")
DEFAULT_ITEMS = 20
SHOTS = 3  # solved items in a few-shot prompt
FEW_SHOT_STOP = ("\nQ:", "\n\n")  # a base model goes on to write the next question


class TaskError(ValueError):
    """One line for a person: unknown task, no items, no answers to score."""


@dataclass(frozen=True)
class LabItem:
    task: str  # the scenario id
    number: int  # 1-based: the task's item number (the same across variants)
    variant: str | None  # the scenario's variant label, None without variants
    item: Item  # as asked: the prompt with its lettered choices and the variant's prefix and suffix
    # Answers scored as continuations, without a leading space: multiple choice: the option
    # letters; open: the answer then its accepted alternatives.
    targets: tuple[str, ...]
    right: int | None  # multiple choice: the index of the right letter in targets; None for open answers

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.task, self.number, self.variant or "")

    @property
    def solution(self) -> str:
        """The answer a solved example shows: the right letter, or the answer itself."""
        return self.targets[self.right if self.right is not None else 0]


@dataclass(frozen=True)
class LabTask:
    scenario: Scenario
    items: tuple[LabItem, ...]  # items x variants, in asking order
    shots: tuple[LabItem, ...]  # the solved items few-shot prompts show: never one being asked

    @property
    def id(self) -> str:
        return self.scenario.id

    @property
    def multiple_choice(self) -> bool:
        return self.scenario.check == "choice"

    def params(self) -> SamplingParams:
        """The scenario's parameters, greedy. Without a repeat penalty unless the scenario sets
        one: it would push down digits and words of the question that the answer repeats."""
        params = SamplingParams(repeat_penalty=1.0, seed=0).with_changes(self.scenario.params)
        return replace(params, temperature=0.0)

    def request(self, item: LabItem, form: str) -> TurnRequest:
        if form == "chat":
            system = self.scenario.system
            messages: list[Message] = [{"role": "system", "content": system}] if system else []
            for user, assistant in self.scenario.opening:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            messages.append({"role": "user", "content": item.item.prompt})
            return TurnRequest(messages, self.params())
        if form == "few-shot":
            return TurnRequest([], self.params(), completion=self.few_shot_prompt(item), stop=FEW_SHOT_STOP)
        raise ValueError(f"unknown form {form!r} (known: {', '.join(FORMS)})")

    def few_shot_prompt(self, item: LabItem) -> str:
        """The system prompt as a first line, the scenario's opening turns and the shots as
        solved questions, then the question asked."""
        solved = [*self.scenario.opening, *((shot.item.prompt, shot.solution) for shot in self.shots)]
        parts = [f"{self.scenario.system}\n\n"] if self.scenario.system else []
        parts += [f"Q: {question}\nA: {answer}\n\n" for question, answer in solved]
        parts.append(f"Q: {item.item.prompt}\nA:")
        return "".join(parts)

    def continuations(self, item: LabItem, form: str) -> list[str]:
        """The targets as text after the prompt: few-shot prompts end with "A:", so a space first."""
        return [f" {target}" if form == "few-shot" else target for target in item.targets]


def runnable_problem(scenario: Scenario) -> str | None:
    """Why the lab cannot run this scenario, or None when it can."""
    if not scenario.has_items:
        return f"task '{scenario.id}' has no items to ask"
    if scenario.check is None:
        return f"task '{scenario.id}' has no check to score its replies"
    if scenario.check not in ITEM_CHECKS:
        return f"task '{scenario.id}' has no right answer to score: its check ({scenario.check}) judges a reply's form"
    return None


def lab_tasks(ids: list[str], scenarios: dict[str, Scenario], items: int, seed: int) -> list[LabTask]:
    """The tasks `ids`, `items` base items each (fewer where a task has fewer), each item in every
    variant; generated items come from `seed`."""
    if items < 1:
        raise TaskError(f"the number of items must be at least 1, not {items}")
    runnable = sorted(sid for sid, scenario in scenarios.items() if runnable_problem(scenario) is None)
    tasks = []
    for task_id in dict.fromkeys(ids):  # a task named twice is asked once
        scenario = scenarios.get(task_id)
        if scenario is None:
            raise TaskError(f"unknown task '{task_id}'; known tasks: {', '.join(runnable)}")
        problem = runnable_problem(scenario)
        if problem:
            raise TaskError(f"{problem}; tasks the lab can run: {', '.join(runnable)}")
        tasks.append(_generated_task(scenario, items, seed) if scenario.generate else _listed_task(scenario, items))
    return tasks


def _listed_task(scenario: Scenario, items: int, skip: int | None = None) -> LabTask:
    """The first `items` items of the list; shots from the end of the list, among those not asked
    (nor item number `skip`)."""
    variants = _variants(scenario)

    def listed(number: int, variant: int) -> LabItem:
        # Scenario.item counts across variants (item 1 plain, item 1 step by step, item 2 plain...);
        # a list needs no random numbers.
        item = scenario.item((number - 1) * len(variants) + variant, random.Random(0))
        return _lab_item(scenario, number, variants[variant], item)

    asked = min(items, len(scenario.items))
    lab_items = tuple(listed(number, v) for number in range(1, asked + 1) for v in range(len(variants)))
    spare = [listed(number, 0) for number in range(asked + 1, len(scenario.items) + 1)]
    spare = [shot for shot in spare if shot.targets and shot.number != skip]
    answers = {item.solution for item in (*lab_items, *spare) if item.targets}
    # Where every item has the same answer ("cannot be determined"), solved examples would give it away.
    shots = tuple(spare[-SHOTS:]) if len(answers) > 1 else ()
    return LabTask(scenario, lab_items, shots)


def _generated_task(scenario: Scenario, items: int, seed: int) -> LabTask:
    """`items` fresh items from `seed`; shots from another seed, none equal to an asked item."""
    generate = GENERATORS[str(scenario.generate)]
    variants = _variants(scenario)
    rng = random.Random(seed)
    bases = [generate(n, rng) for n in range(items)]
    lab_items = tuple(
        _lab_item(scenario, number, variant, _in_variant(base, variant))
        for number, base in enumerate(bases, start=1)
        for variant in variants
    )
    asked_prompts = {item.item.prompt for item in lab_items}
    shot_rng = random.Random(f"lab shots {seed}")
    shots: list[LabItem] = []
    for n in range(SHOTS * 10):  # bounded: a generator with few distinct items may not give SHOTS new ones
        if len(shots) == SHOTS:
            break
        shot = _lab_item(scenario, n + 1, variants[0], _in_variant(generate(n, shot_rng), variants[0]))
        if shot.item.prompt not in asked_prompts and shot.targets:
            shots.append(shot)
    return LabTask(scenario, lab_items, tuple(shots))


def _variants(scenario: Scenario) -> tuple[Variant | None, ...]:
    return scenario.variants or (None,)


def _in_variant(item: Item, variant: Variant | None) -> Item:
    """A generated item asked in `variant` (generators know nothing of variants)."""
    if variant is None:
        return item
    prompt = "\n\n".join(part for part in (variant.prefix, item.prompt, variant.suffix) if part)
    return replace(item, prompt=prompt, variant=variant.label or None)


def _lab_item(scenario: Scenario, number: int, variant: Variant | None, item: Item) -> LabItem:
    label = (variant.label or None) if variant else None
    if scenario.check == "choice" and item.choices and item.answer in item.choices:
        letters = tuple(CHOICE_LETTERS[: len(item.choices)])
        return LabItem(scenario.id, number, label, item, letters, item.choices.index(item.answer))
    answers = [answer for answer in (item.answer, *item.accept) if answer]
    if not answers and scenario.check == "number" and item.number is not None:
        answers = [f"{item.number:g}"]
    return LabItem(scenario.id, number, label, item, tuple(dict.fromkeys(answers)), None)


def chat_few_shot(scenario: Scenario, item: Item) -> str:
    """The few-shot prompt the chat app gives a base model for a scenario's item (a setting): the
    lab's, with solved examples from the scenario's other items."""
    if scenario.generate:
        task = _generated_task(scenario, 0, 0)
    else:
        number = (item.index - 1) // len(_variants(scenario)) + 1  # Item.index counts variants too
        task = _listed_task(scenario, 0, skip=number)
    return task.few_shot_prompt(LabItem(scenario.id, item.index, item.variant, item, (), None))


def form_for(card: ModelCard, forced: str | None) -> str:
    """How a model is asked: as forced, else chat for an instruct model, few-shot for a base model."""
    if forced is not None:
        return forced
    return "chat" if card.instruct else "few-shot"


# --- partial credit --------------------------------------------------------------------------


def partial_credit(task: LabTask, item: LabItem, reply: str) -> float | None:
    """A score between 0 and 1 for a nearly right reply, where the task has one (else None):
    the share of digits right for a number, closeness of spelling for an unscrambled word."""
    if task.scenario.check == "number" and item.item.number is not None:
        said = last_number(reply)
        return 0.0 if said is None else digits_right(item.item.number, said)
    if task.id == "unscramble" and item.item.answer:
        answer = item.item.answer.lower()
        words = re.findall(r"[^\W\d_]+", reply.lower())
        if not words:
            return 0.0
        distance = min(edit_distance(word, answer) for word in words)
        return max(0.0, 1.0 - distance / len(answer))
    return None


def digits_right(expected: float, said: float) -> float:
    """The share of digits right, aligned from the units, over the longer of the two numbers:
    579 said as 578 is 2/3, as 1579 is 3/4."""
    wanted, got = _digits(expected), _digits(said)
    right = sum(a == b for a, b in zip(reversed(wanted), reversed(got), strict=False))
    return right / max(len(wanted), len(got))


def _digits(value: float) -> str:
    text = str(int(value)) if float(value).is_integer() else f"{value:f}".rstrip("0")
    return text.lstrip("-").replace(".", "")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]
