"""Runs a lab: every model works through its pending items at once (the engine shares the cores
between them as in chat); per item a greedy turn, then the same prompt scored for the right
answers, then one row appended to the results file, so a stopped or killed run loses nothing
finished and resumes where it stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tui.checks import run_check
from tui.engine.base import Backend, ModelLoadError
from tui.engine.events import Finished, TurnRequest
from tui.lab.results import LabFile, row_probability
from tui.lab.tasks import LabItem, LabTask, partial_credit


@dataclass
class LabProgress:
    done: int  # rows in the file for this run's items, those of earlier (resumed) runs included
    total: int  # rows the run will have once every model that has not failed is done
    elapsed_s: float
    left_s: float | None  # None until every model still working has finished an item
    model_done: dict[str, tuple[int, int]]  # model id -> (done, total)
    last: dict[str, Any] | None  # the row just written


class LabRunner:
    """Asks `tasks` of `models` and appends a row per item and model to `file`. It never closes
    the models (whoever made them owns them); it loads those not loaded yet."""

    def __init__(self, tasks: list[LabTask], models: list[Backend], file: LabFile, forms: dict[str, str]) -> None:
        self.tasks = tasks
        self.models = models
        self.file = file
        self.forms = forms
        written = file.done()
        self.pending: dict[str, list[tuple[LabTask, LabItem]]] = {
            model.card.id: [
                (task, item) for task in tasks for item in task.items if (*item.key, model.card.id) not in written
            ]
            for model in models
        }
        every = sum(len(task.items) for task in tasks)
        self.totals = {model.card.id: every for model in models}
        self.done = {model.card.id: every - len(self.pending[model.card.id]) for model in models}
        self.failed: dict[str, str] = {}  # model id -> why, for models that failed in this run
        self._unavailable: dict[str, str] = {}  # model id -> why it cannot score: asked once per model
        self._first_item_at: dict[str, float] = {}  # when each model began its items, for its pace
        self._rows_now: dict[str, int] = {model.card.id: 0 for model in models}  # rows written in this run
        self._started = time.monotonic()
        self._stopping = False
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._on_progress: Callable[[LabProgress], None] | None = None

    async def run(self, on_progress: Callable[[LabProgress], None] | None = None) -> None:
        self._started = time.monotonic()
        if self._stopping:
            return
        for model in self.models:  # failed to load before: recorded now, so the first progress counts without it
            if model.state == "error" and self.pending[model.card.id]:
                self._fail(model, model.error or "it failed to load")
        self._on_progress = on_progress
        self._report(None)
        self._workers = [asyncio.create_task(self._work(model)) for model in self.models]
        try:
            await asyncio.gather(*self._workers)
        except BaseException:  # a row that cannot be written (a full disk), or run() cancelled: stop them all
            await self.stop()
            raise

    async def stop(self) -> None:
        """Cancel the turns and scores in flight and wait for every model to stop; no row is
        written for an item cut short (every finished one is on disk already)."""
        self._stopping = True
        for task in self._loading.values():
            task.cancel()
        await asyncio.gather(*(model.cancel() for model in self.models), return_exceptions=True)
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- one model -------------------------------------------------------------------------------

    async def _work(self, model: Backend) -> None:
        if not self.pending[model.card.id] or model.card.id in self.failed or not await self._ready(model):
            return
        self._first_item_at[model.card.id] = time.monotonic()
        for task, item in self.pending[model.card.id]:
            if self._stopping or model.card.id in self.failed:
                return
            row = await self._ask(model, task, item)
            if row is None:
                return
            self.file.append(row)
            self.done[model.card.id] += 1
            self._rows_now[model.card.id] += 1
            self._report(row)

    async def _ready(self, model: Backend) -> bool:
        """Load the model if it is not loaded; a model that cannot load is recorded as failed."""
        if model.state == "ready":
            return True
        loading = asyncio.ensure_future(model.load())
        self._loading[model.card.id] = loading
        try:
            await loading
        except ModelLoadError as error:
            self._fail(model, str(error))
            return False
        except asyncio.CancelledError:
            if self._stopping:  # stop() cancelled the load
                return False
            raise
        finally:
            del self._loading[model.card.id]
        return not self._stopping

    async def _ask(self, model: Backend, task: LabTask, item: LabItem) -> dict[str, Any] | None:
        """One item: generate, score, check. None when the run stops or the model fails."""
        form = self.forms[model.card.id]
        request = task.request(item, form)
        began = time.monotonic()
        finished: Finished | None = None
        async for event in model.turn(request):
            if isinstance(event, Finished):
                finished = event
        if self._stopping or finished is None or finished.status == "cancelled":
            return None
        if finished.status == "error" and model.state == "error":  # its worker died: no more items
            self._fail(model, finished.error or model.error or "it failed")
            return None
        row: dict[str, Any] = {
            "type": "row",
            "task": task.id,
            "item": item.number,
            "variant": item.variant,
            "model": model.card.id,
            "form": form,
            "reply": finished.text,
        }
        if finished.status == "error":  # this item alone failed (e.g. too long for the context)
            row.update(exact=False, check="no reply", error=finished.error or "the reply failed")
        else:
            result = run_check(task.scenario.check, finished.text, item.item) if task.scenario.check else None
            row.update(exact=result.passed if result else None, check=result.reason if result else None)
        row.update(probability=None, target_logprobs=None, probability_pick=None)
        if finished.status == "done" and not await self._score(model, task, item, request, row):
            return None
        row["partial"] = partial_credit(task, item, finished.text)
        row["tokens"] = finished.completion_tokens
        row["seconds"] = round(time.monotonic() - began, 3)
        return row

    async def _score(
        self, model: Backend, task: LabTask, item: LabItem, request: TurnRequest, row: dict[str, Any]
    ) -> bool:
        """The probability of the right answer, into `row`; false when the run stops or the model fails."""
        model_id = model.card.id
        if model_id in self._unavailable:
            row["score_unavailable"] = self._unavailable[model_id]
            return True
        scores = await model.score(request, task.continuations(item, self.forms[model_id]))
        if self._stopping or scores.status == "cancelled":
            return False
        if scores.status == "unavailable":
            self._unavailable[model_id] = row["score_unavailable"] = scores.error or "this backend cannot score"
        elif scores.status == "error":
            if model.state == "error":
                self._fail(model, scores.error or model.error or "it failed")
                return False
            row["error"] = f"scoring failed: {scores.error}"
        else:
            probability, pick = row_probability(scores.logprobs, item.right)
            row.update(
                probability=probability,
                target_logprobs=[sum(logprobs) for logprobs in scores.logprobs],
                probability_pick=pick,
            )
        return True

    def _fail(self, model: Backend, message: str) -> None:
        """The model stops here: recorded in the file, its remaining items no longer counted."""
        model_id = model.card.id
        self.failed[model_id] = message
        self.totals[model_id] = self.done[model_id]
        self.file.append({"type": "failed", "model": model_id, "error": message})
        self._report(None)

    # --- progress -------------------------------------------------------------------------------

    def _report(self, row: dict[str, Any] | None) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress(row))

    def progress(self, last: dict[str, Any] | None = None) -> LabProgress:
        now = time.monotonic()
        return LabProgress(
            done=sum(self.done.values()),
            total=sum(self.totals.values()),
            elapsed_s=now - self._started,
            left_s=self._time_left(now),
            model_done={model_id: (self.done[model_id], self.totals[model_id]) for model_id in self.totals},
            last=last,
        )

    def _time_left(self, now: float) -> float | None:
        paces: list[tuple[float | None, int]] = []
        for model_id, total in self.totals.items():
            rows = self._rows_now[model_id]
            pace = (now - self._first_item_at[model_id]) / rows if rows else None
            paces.append((pace, total - self.done[model_id]))
        return time_left(paces)


def time_left(paces: list[tuple[float | None, int]]) -> float | None:
    """The run's remaining time from each model's (mean seconds per item, or None before its first,
    items remaining): the models work at once, so the run ends with the slowest of them. None
    while a model with items left has not finished one."""
    left = 0.0
    for pace, remaining in paces:
        if remaining <= 0:
            continue
        if pace is None:
            return None
        left = max(left, pace * remaining)
    return left
