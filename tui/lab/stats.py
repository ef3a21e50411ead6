"""The lab's rows summed into cells (one task x variant x model), with the uncertainty a person
needs to tell a jump from noise: a 95% Wilson interval on accuracy, and a flag on cells with
too few items to say much."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MIN_ITEMS = 10  # a cell with fewer items is flagged "too few items"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of successes / n (95% with the default z); (0, 1) for n == 0.
    Unlike p ± z·se it stays inside [0, 1] and is not zero-width at 0/n or n/n."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Cell:
    """One task x variant x model."""

    task: str
    variant: str | None
    model: str  # card id
    n: int  # items scored
    exact: int  # items passed by the scenario's check
    exact_low: float  # Wilson 95% bounds of exact / n
    exact_high: float
    probability: float | None  # mean probability of the right answer (None: not scored / unavailable)
    probability_pick: float | None  # multiple choice: share of items whose most likely option is right
    partial: float | None  # mean partial credit, None where the task has none
    failed: str | None  # the model failed in this run (the message): its cell is incomplete

    @property
    def accuracy(self) -> float:
        return self.exact / self.n if self.n else 0.0

    @property
    def too_few(self) -> bool:
        return self.n < MIN_ITEMS


def cells(rows: list[dict[str, Any]], failures: dict[str, str], models: list[str] | None = None) -> list[Cell]:
    """The cells of a results file's rows, ordered by task and variant (as they first appear),
    then by model: in `models` order (the header's lineup), others as they first appear.
    A model that failed gets a cell (empty if it has no rows) wherever other models have one."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:  # an item written twice counts once: the last
        latest[(row["task"], row["item"], row.get("variant"), row["model"])] = row
    tasks: dict[str, None] = {}
    variants: dict[str | None, None] = {}
    model_order = dict.fromkeys(models or [])
    grouped: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}
    for (task, _, variant, model), row in latest.items():
        tasks.setdefault(task)
        variants.setdefault(variant)
        model_order.setdefault(model)
        grouped.setdefault((task, variant, model), []).append(row)
    for model in failures:
        model_order.setdefault(model)
    present = {(task, variant) for task, variant, _ in grouped}
    return [
        _cell(task, variant, model, grouped.get((task, variant, model), []), failures.get(model))
        for task in tasks
        for variant in variants
        if (task, variant) in present
        for model in model_order
        if (task, variant, model) in grouped or model in failures
    ]


def _cell(task: str, variant: str | None, model: str, rows: list[dict[str, Any]], failed: str | None) -> Cell:
    verdicts = [row["exact"] for row in rows if row.get("exact") is not None]  # None: the check did not apply
    passed = sum(bool(verdict) for verdict in verdicts)
    low, high = wilson(passed, len(verdicts))
    return Cell(
        task=task,
        variant=variant,
        model=model,
        n=len(verdicts),
        exact=passed,
        exact_low=low,
        exact_high=high,
        probability=_mean(rows, "probability"),
        probability_pick=_mean(rows, "probability_pick"),
        partial=_mean(rows, "partial"),
        failed=failed,
    )


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean of a field over the rows that have it; None when none has it."""
    values = [float(row[key]) for row in rows if row.get(key) is not None]
    return sum(values) / len(values) if values else None
