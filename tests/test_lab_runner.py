"""The lab runner with scripted models: every row written as it comes, resumed runs ask only what
is missing, a backend that cannot score, a model that fails, stopping, and the progress it reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from scripted import ScriptedModel, card
from waiting import eventually

from tui.engine.base import Backend, ModelLoadError
from tui.engine.events import Finished, Scores, TurnEvent, TurnRequest
from tui.lab.results import LabFile, lab_header
from tui.lab.runner import LabProgress, LabRunner, time_left
from tui.lab.tasks import LabTask, form_for, lab_tasks
from tui.scenario import load_scenarios

TASKS = ["emoji-movie-choices", "arithmetic"]
ROWS = 2 * 2 * 3  # models x tasks x items


@pytest.fixture
def tasks() -> list[LabTask]:
    scenarios, _ = load_scenarios()
    return lab_tasks(TASKS, scenarios, 3, seed=0)


def solutions(tasks: list[LabTask]) -> dict[str, str]:
    """The right answer to every prompt asked, in either form."""
    answers = {}
    for task in tasks:
        for item in task.items:
            answers[item.item.prompt] = item.solution
            answers[task.few_shot_prompt(item)] = item.solution
    return answers


def asked(request: TurnRequest) -> str:
    return request.completion if request.completion is not None else request.messages[-1]["content"]


def solver(tasks: list[LabTask]) -> ScriptedModel:
    """A base model (asked few-shot) that answers every item right."""
    answers = solutions(tasks)
    base = replace(card("solver", 2_000_000_000), instruct=False)
    return ScriptedModel(base, script=lambda request: answers[asked(request)])


def guesser() -> ScriptedModel:
    """An instruct model (asked in chat) that always says 7."""
    return ScriptedModel(card("guesser", 100_000_000), script=lambda request: "7")


def new_file(path: Path, tasks: list[LabTask], models: list[Backend]) -> LabFile:
    cards = [model.card for model in models]
    forms = {c.id: form_for(c, None) for c in cards}
    return LabFile.create(path, lab_header(tasks, cards, forms, 3, 0, {"schedule": "test", "cores": 2}))


def runner_for(path: Path, tasks: list[LabTask], models: list[Backend]) -> LabRunner:
    file = LabFile.open(path) if path.exists() else new_file(path, tasks, models)
    return LabRunner(tasks, models, file, {m.card.id: form_for(m.card, None) for m in models})


def rows_in(path: Path) -> list[dict[str, object]]:
    return LabFile.open(path).rows


async def test_a_run_writes_a_row_per_item_and_model_with_both_scores(tmp_path: Path, tasks: list[LabTask]) -> None:
    path = tmp_path / "lab.jsonl"
    models: list[Backend] = [guesser(), solver(tasks)]
    runner = runner_for(path, tasks, models)
    seen: list[LabProgress] = []
    await runner.run(seen.append)

    rows = rows_in(path)
    assert len(rows) == ROWS
    assert len({(r["task"], r["item"], r["variant"], r["model"]) for r in rows}) == ROWS
    solved = [r for r in rows if r["model"] == "solver"]
    assert all(r["exact"] is True and r["form"] == "few-shot" for r in solved)
    assert all(r["probability"] > 0.5 for r in solved)  # type: ignore[operator]
    assert [r["probability_pick"] for r in solved if r["task"] == "emoji-movie-choices"] == [True] * 3
    guessed = [r for r in rows if r["model"] == "guesser"]
    assert all(r["exact"] is False and r["form"] == "chat" for r in guessed)
    arithmetic = [r for r in rows if r["task"] == "arithmetic"]
    assert all(isinstance(r["partial"], float) and isinstance(r["target_logprobs"], list) for r in arithmetic)
    assert all("error" not in r and "score_unavailable" not in r for r in rows)
    # Each model was asked its own way: the base model by completion text, the other in chat.
    assert all(request.completion is not None for request in models[1].requests)  # type: ignore[attr-defined]
    assert all(request.completion is None for request in models[0].requests)  # type: ignore[attr-defined]
    # Progress: once at the start, then after every row, done counting up to the total.
    assert [p.done for p in seen] == list(range(ROWS + 1))
    assert {p.total for p in seen} == {ROWS}
    assert seen[-1].model_done == {"guesser": (6, 6), "solver": (6, 6)}
    assert seen[-1].left_s == 0 and seen[-1].last == rows[-1]


async def test_a_resumed_run_asks_only_the_items_missing_and_counts_those_written(
    tmp_path: Path, tasks: list[LabTask]
) -> None:
    path = tmp_path / "lab.jsonl"
    first = guesser()
    await runner_for(path, tasks, [first]).run()
    before = rows_in(path)

    again, other = guesser(), solver(tasks)
    seen: list[LabProgress] = []
    await runner_for(path, tasks, [again, other]).run(seen.append)

    assert again.requests == []  # every item of it was in the file
    assert len(other.requests) == 2 * 6  # a turn and a score per item
    rows = rows_in(path)
    assert rows[: len(before)] == before and len(rows) == ROWS
    assert (seen[0].done, seen[0].total) == (6, ROWS)


class Unscored(ScriptedModel):
    """A backend that cannot score (a remote server without prompt log-probs)."""

    score_calls = 0

    async def score(self, request: TurnRequest, continuations: list[str]) -> Scores:
        self.score_calls += 1
        return Scores("unavailable", error="example.org returns no prompt log-probabilities")


async def test_a_backend_that_cannot_score_is_asked_once_and_its_rows_say_why(
    tmp_path: Path, tasks: list[LabTask]
) -> None:
    path = tmp_path / "lab.jsonl"
    answers = solutions(tasks)
    model = Unscored(card("remote", 1_000_000_000), script=lambda request: answers[asked(request)])
    await runner_for(path, tasks, [model]).run()

    assert model.score_calls == 1
    rows = rows_in(path)
    assert len(rows) == 6
    assert all(r["probability"] is None for r in rows)
    assert all(r["score_unavailable"] == "example.org returns no prompt log-probabilities" for r in rows)
    assert all(r["exact"] is True for r in rows)  # the check still ran


class Dying(ScriptedModel):
    """Its worker dies during its third turn; before that, one item's reply fails alone."""

    turns = 0

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        self.turns += 1
        if self.turns == 2:
            yield Finished("error", "error", "", error="the prompt is too long for the context")
            return
        if self.turns == 3:
            self.state, self.error = "error", "the model's worker process was killed (SIGKILL)"
            yield Finished("error", "error", "par", error=self.error)
            return
        async for event in super().turn(request):
            yield event


async def test_a_model_whose_worker_dies_is_recorded_failed_and_the_others_finish(
    tmp_path: Path, tasks: list[LabTask]
) -> None:
    path = tmp_path / "lab.jsonl"
    dying = Dying(card("dying", 500_000_000))
    runner = runner_for(path, tasks, [dying, solver(tasks)])
    seen: list[LabProgress] = []
    await runner.run(seen.append)

    file = LabFile.open(path)
    assert file.failures == {"dying": "the model's worker process was killed (SIGKILL)"}
    assert runner.failed == file.failures
    dying_rows = [r for r in file.rows if r["model"] == "dying"]
    assert [r["item"] for r in dying_rows] == [1, 2]  # its first two items, then it stopped
    assert "error" not in dying_rows[0]
    assert dying_rows[1]["error"] == "the prompt is too long for the context" and dying_rows[1]["exact"] is False
    assert len([r for r in file.rows if r["model"] == "solver"]) == 6
    # Its items left no longer count: the run ends at 100%.
    assert (seen[-1].done, seen[-1].total) == (8, 8) and seen[-1].model_done["dying"] == (2, 2)


@pytest.mark.parametrize("loaded_by", ["the runner", "its caller"])
async def test_a_model_that_cannot_load_is_recorded_failed_and_the_others_run(
    tmp_path: Path, tasks: list[LabTask], loaded_by: str
) -> None:
    path = tmp_path / "lab.jsonl"
    broken = ScriptedModel(card("broken", 100_000_000), load_error="not a GGUF file")
    if loaded_by == "its caller":  # as `ladder lab` does, before the run
        with pytest.raises(ModelLoadError):
            await broken.load()
    seen: list[LabProgress] = []
    await runner_for(path, tasks, [broken, guesser()]).run(seen.append)

    file = LabFile.open(path)
    assert file.failures == {"broken": "not a GGUF file"}
    assert {r["model"] for r in file.rows} == {"guesser"} and len(file.rows) == 6
    assert seen[-1].total == 6
    if loaded_by == "its caller":
        assert seen[0].total == 6  # not counted from the start


async def test_stop_cancels_the_turn_in_flight_and_keeps_only_whole_rows(tmp_path: Path, tasks: list[LabTask]) -> None:
    path = tmp_path / "lab.jsonl"
    reply = " ".join(["word"] * 10)  # within every task's max_tokens
    slow = ScriptedModel(card("slow", 100_000_000), script=lambda request: reply, delay=0.3)  # 3 s a turn
    runner = runner_for(path, tasks, [slow])
    running = asyncio.create_task(runner.run())
    await eventually(lambda: len(runner.file.rows) >= 1, timeout=20, what="a first row")
    await eventually(lambda: slow.state == "busy", what="the next turn to start")

    await asyncio.wait_for(runner.stop(), timeout=1.5)  # the turn is cancelled, not awaited to its end

    assert running.done() and running.exception() is None
    rows = rows_in(path)
    assert 1 <= len(rows) < 6
    assert all(r["reply"] == reply for r in rows)  # no row for the turn cut short
    assert rows == runner.file.rows


async def test_stop_while_a_model_loads_ends_the_run_without_rows(tmp_path: Path, tasks: list[LabTask]) -> None:
    path = tmp_path / "lab.jsonl"
    loading = ScriptedModel(card("loading", 100_000_000), load_delay=60)
    runner = runner_for(path, tasks, [loading])
    running = asyncio.create_task(runner.run())
    await eventually(lambda: loading.state == "loading", what="the load to start")

    await asyncio.wait_for(runner.stop(), timeout=5)

    assert running.done() and running.exception() is None
    assert rows_in(path) == [] and LabFile.open(path).failures == {}


def test_time_left_is_the_slowest_models_remaining_time_at_its_own_pace() -> None:
    assert time_left([(2.0, 10), (10.0, 3), (1.0, 0)]) == 30.0
    assert time_left([(2.0, 10), (None, 0)]) == 20.0  # a model done before its first row counts no more
    assert time_left([(2.0, 10), (None, 4)]) is None  # a pace not known yet
    assert time_left([]) == 0.0
