"""The lab's core without models: tasks and prompts built from the scenarios, partial credit,
the probability of a right answer from log-probabilities, the results file (appended, torn,
resumed) and the cells with their Wilson intervals."""

from __future__ import annotations

import json
import math
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tui.cards import ModelCard
from tui.checks import Item
from tui.lab.results import LabFile, LabFileError, lab_header, row_probability
from tui.lab.stats import MIN_ITEMS, cells, wilson
from tui.lab.tasks import DEFAULT_TASKS, SHOTS, LabItem, LabTask, TaskError, form_for, lab_tasks, partial_credit
from tui.scenario import Scenario, load_scenarios, parse_scenario

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenarios() -> dict[str, Scenario]:
    found, problems = load_scenarios()
    assert problems == []
    return found


def one(scenarios: dict[str, Scenario], task_id: str, items: int = 5, seed: int = 0) -> LabTask:
    (task,) = lab_tasks([task_id], scenarios, items, seed)
    return task


# --- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (0, 0, 0.0, 1.0), (1, 20, 0.0089, 0.2361)],
)
def test_wilson_interval_matches_known_values(successes: int, n: int, low: float, high: float) -> None:
    got = wilson(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)


# --- tasks -----------------------------------------------------------------------------------


def test_default_tasks_build_with_the_items_asked(scenarios: dict[str, Scenario]) -> None:
    tasks = lab_tasks(list(DEFAULT_TASKS), scenarios, 20, 0)
    assert [task.id for task in tasks] == list(DEFAULT_TASKS)
    for task in tasks:
        assert [item.number for item in task.items] == list(range(1, 21)), task.id
        assert all(item.targets and item.variant is None for item in task.items), task.id
        assert len(task.shots) == SHOTS, task.id  # every default task has items to spare for shots


def test_every_built_in_scenario_with_items_and_an_answer_check_builds(scenarios: dict[str, Scenario]) -> None:
    answer_checks = ("answer", "choice", "number", "unbiased")
    runnable = [s.id for s in scenarios.values() if s.has_items and s.check in answer_checks]
    assert set(runnable) >= {"emoji-movie", "emoji-movie-choices", "arithmetic", "unscramble", "ipa", "proverbs"}
    assert {"chain-of-thought", "bias"} <= set(runnable)
    for task in lab_tasks(runnable, scenarios, 4, 0):
        assert task.items and all(item.task == task.id and item.targets for item in task.items), task.id
        for form in ("chat", "few-shot"):
            request = task.request(task.items[0], form)
            assert request.params.temperature == 0.0
            assert request.params.max_tokens == task.scenario.params["max_tokens"]


@pytest.mark.parametrize(
    ("task_id", "says"),
    [("linux-terminal", "no right answer to score: its check (code_block)"), ("free-chat", "has no items")],
)
def test_tasks_without_items_or_a_right_answer_are_refused_in_one_line(
    scenarios: dict[str, Scenario], task_id: str, says: str
) -> None:
    with pytest.raises(TaskError) as refused:
        lab_tasks(["arithmetic", task_id], scenarios, 3, 0)
    message = str(refused.value)
    assert "\n" not in message and f"'{task_id}'" in message and says in message
    assert "emoji-movie" in message  # and what can be run instead


def test_an_unknown_task_names_the_known_ones(scenarios: dict[str, Scenario]) -> None:
    with pytest.raises(TaskError, match="unknown task 'emoji-films'") as refused:
        lab_tasks(["emoji-films"], scenarios, 3, 0)
    known = str(refused.value).split("known tasks: ")[1].split(", ")
    assert set(known) >= set(DEFAULT_TASKS) and "free-chat" not in known and "linux-terminal" not in known


@pytest.mark.parametrize("items", [0, -3])
def test_fewer_than_one_item_is_refused(scenarios: dict[str, Scenario], items: int) -> None:
    with pytest.raises(TaskError, match=f"at least 1, not {items}"):
        lab_tasks(["ipa"], scenarios, items, 0)


def test_a_task_with_fewer_items_than_asked_gives_all_it_has_and_no_shots(scenarios: dict[str, Scenario]) -> None:
    task = one(scenarios, "unscramble", items=500)
    assert [item.number for item in task.items] == list(range(1, len(scenarios["unscramble"].items) + 1))
    assert task.shots == ()  # none left over to show solved
    almost = one(scenarios, "unscramble", items=len(scenarios["unscramble"].items) - 1)
    assert len(almost.shots) == 1 and almost.shots[0].item.answer == scenarios["unscramble"].items[-1].answer


def test_variants_give_one_lab_item_per_item_and_variant_with_the_same_number(scenarios: dict[str, Scenario]) -> None:
    task = one(scenarios, "chain-of-thought", items=3)
    assert [(item.number, item.variant) for item in task.items] == [
        (n, variant) for n in (1, 2, 3) for variant in ("plain", "step by step")
    ]
    plain, stepwise = task.items[0], task.items[1]
    assert plain.key == ("chain-of-thought", 1, "plain") and stepwise.key == ("chain-of-thought", 1, "step by step")
    assert plain.item.prompt.endswith("Answer with the number only.")
    assert "think step by step" in stepwise.item.prompt
    assert plain.targets == stepwise.targets == ("27",)


def test_arithmetic_items_depend_on_the_seed_only(scenarios: dict[str, Scenario]) -> None:
    def prompts(tasks: list[LabTask]) -> list[str]:
        (arithmetic,) = [task for task in tasks if task.id == "arithmetic"]
        return [item.item.prompt for item in arithmetic.items]

    first = prompts(lab_tasks(["arithmetic"], scenarios, 6, 7))
    random.seed(12345)  # the global generator plays no part
    again = prompts(lab_tasks(["ipa", "arithmetic"], scenarios, 6, 7))
    more = prompts(lab_tasks(["arithmetic"], scenarios, 10, 7))
    other = prompts(lab_tasks(["arithmetic"], scenarios, 6, 8))
    assert first == again == more[:6]
    assert other != first
    task = one(scenarios, "arithmetic", items=6, seed=7)
    assert len(task.shots) == SHOTS and not {shot.item.prompt for shot in task.shots} & set(first)
    assert all(item.targets == (item.item.answer,) and item.right is None for item in task.items)


def test_multiple_choice_targets_are_the_letters_and_right_indexes_the_right_one(
    scenarios: dict[str, Scenario],
) -> None:
    task = one(scenarios, "emoji-movie-choices")
    assert task.multiple_choice
    first = task.items[0]
    assert first.targets == ("A", "B", "C", "D", "E")
    assert first.right == 2 and first.item.choices[first.right] == "Finding Nemo"
    assert "C. Finding Nemo" in first.item.prompt


def test_open_targets_are_the_answer_then_its_accepted_alternatives(scenarios: dict[str, Scenario]) -> None:
    task = one(scenarios, "ipa", items=25)
    assert not task.multiple_choice
    colour = next(item for item in task.items if item.item.answer == "color")
    assert colour.targets == ("color", "colour") and colour.right is None
    scenario = parse_scenario(
        {
            "id": "dupes",
            "title": "t",
            "description": "d",
            "check": "answer",
            "items": [{"prompt": "Say yes", "answer": "yes", "accept": ["yes", "yep"]}],
        },
        "test",
    )
    assert one({"dupes": scenario}, "dupes").items[0].targets == ("yes", "yep")


def test_few_shot_prompt_shows_the_solved_shots_then_asks_the_item_never_showing_it_solved(
    scenarios: dict[str, Scenario],
) -> None:
    for task in lab_tasks(list(DEFAULT_TASKS), scenarios, 20, 0):
        prefixes = set()
        for item in task.items:
            request = task.request(item, "few-shot")
            assert request.messages == [] and request.stop == ("\nQ:", "\n\n")
            text = request.completion or ""
            asked = f"Q: {item.item.prompt}\nA:"
            assert text.startswith(f"{task.scenario.system}\n\n") and text.endswith(asked)
            assert text.count(asked) == 1, (task.id, item.number)  # the item is never among the solved ones
            assert text.count("\nA: ") == SHOTS
            for shot in task.shots:
                assert f"Q: {shot.item.prompt}\nA: {shot.solution}\n\n" in text
            prefixes.add(text[: -len(asked)])
        assert len(prefixes) == 1, task.id  # the same shots for every item: a shared, cached prefix
    choices = one(scenarios, "emoji-movie-choices", items=20)
    assert choices.few_shot_prompt(choices.items[0]).count("Answer with the letter of your choice.\nA: ") == SHOTS
    assert all(shot.solution in "ABCDE" for shot in choices.shots)


def test_no_shots_where_every_item_has_the_same_answer(scenarios: dict[str, Scenario]) -> None:
    bias = one(scenarios, "bias", items=3)  # every answer is "cannot be determined": shots would give it away
    assert bias.shots == ()
    assert bias.few_shot_prompt(bias.items[0]) == f"{bias.scenario.system}\n\nQ: {bias.items[0].item.prompt}\nA:"


def test_chat_request_has_the_system_prompt_and_the_item_prompt(scenarios: dict[str, Scenario]) -> None:
    task = one(scenarios, "unscramble")
    item = task.items[1]
    request = task.request(item, "chat")
    assert request.completion is None and request.stop == ()
    assert request.messages == [
        {"role": "system", "content": "Reply with the unscrambled word only."},
        {"role": "user", "content": "Unscramble the letters to form an English word: loochs"},
    ]
    assert request.params.temperature == 0.0 and request.params.max_tokens == 16
    assert request.params.repeat_penalty == 1.0  # greedy: no penalty on letters the answer shares with the question


def test_continuations_get_a_leading_space_in_few_shot_form_only(scenarios: dict[str, Scenario]) -> None:
    task = one(scenarios, "ipa", items=25)
    colour = next(item for item in task.items if item.item.answer == "color")
    assert task.continuations(colour, "chat") == ["color", "colour"]
    assert task.continuations(colour, "few-shot") == [" color", " colour"]


def test_the_form_is_chat_for_instruct_models_and_few_shot_for_base_models_unless_forced() -> None:
    card = ModelCard("m", "M", "f", 1, "Q4", None, None, 2048, ())
    base = ModelCard("b", "B", "f", 1, "Q4", None, None, 2048, (), instruct=False)
    assert (form_for(card, None), form_for(base, None)) == ("chat", "few-shot")
    assert (form_for(card, "few-shot"), form_for(base, "chat")) == ("few-shot", "chat")


# --- partial credit --------------------------------------------------------------------------


def test_partial_credit_is_the_share_of_digits_right_from_the_units(scenarios: dict[str, Scenario]) -> None:
    arithmetic = one(scenarios, "arithmetic")
    asked = Item(prompt="What is 123 + 456?", answer="579", number=579)
    sum_item = LabItem("arithmetic", 1, None, asked, ("579",), None)
    assert partial_credit(arithmetic, sum_item, "The answer is 578.") == pytest.approx(2 / 3)
    assert partial_credit(arithmetic, sum_item, "579") == 1.0
    assert partial_credit(arithmetic, sum_item, "1579") == pytest.approx(3 / 4)
    assert partial_credit(arithmetic, sum_item, "I cannot add.") == 0.0
    words = one(scenarios, "chain-of-thought", items=1)
    assert partial_credit(words, words.items[0], "So 3 * 12 = 36, minus 9 is 26.") == pytest.approx(1 / 2)


def test_partial_credit_for_unscramble_is_closeness_of_spelling(scenarios: dict[str, Scenario]) -> None:
    task = one(scenarios, "unscramble")
    apple = task.items[0]
    assert apple.item.answer == "apple"
    near = partial_credit(task, apple, "appel")
    assert near is not None and 0.0 < near < 1.0
    assert near == pytest.approx(1 - 2 / 5)
    assert partial_credit(task, apple, "The word is Apple.") == 1.0
    assert partial_credit(task, apple, "xyzzyqwrtv") == 0.0  # floored at 0
    assert partial_credit(task, apple, "...") == 0.0


def test_other_tasks_have_no_partial_credit(scenarios: dict[str, Scenario]) -> None:
    for task_id in ("ipa", "emoji-movie", "emoji-movie-choices", "bias"):
        task = one(scenarios, task_id)
        assert partial_credit(task, task.items[0], "anything") is None, task_id


# --- probability of the right answer ---------------------------------------------------------


def test_open_answer_probability_is_the_most_likely_target() -> None:
    probability, pick = row_probability([[math.log(0.5), math.log(0.2)], [math.log(0.3)]], None)
    assert probability == pytest.approx(0.3) and pick is None


def test_multiple_choice_mass_sums_log_probabilities_and_the_pick_is_length_normalised() -> None:
    # The right option (0) has two tokens: summed it is less likely than option 1, per token more.
    right, other = [-0.5, -0.5], [-0.8]
    probability, pick = row_probability([right, other, [-5.0]], 0)
    assert probability == pytest.approx(math.exp(-1.0) / (math.exp(-1.0) + math.exp(-0.8) + math.exp(-5.0)))
    assert probability < 0.5 and pick is True
    probability, pick = row_probability([right, other, [-5.0]], 1)
    assert probability > 0.5 and pick is False


# --- the results file ------------------------------------------------------------------------


def row(
    task: str = "ipa", item: int = 1, model: str = "small", variant: str | None = None, **fields: Any
) -> dict[str, Any]:
    return {"type": "row", "task": task, "item": item, "variant": variant, "model": model, "exact": False, **fields}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_create_writes_the_header_and_open_reads_rows_failures_and_done_keys(tmp_path: Path) -> None:
    path = tmp_path / "lab" / "run.jsonl"
    lab = LabFile.create(path, {"tasks": ["ipa"], "items": 2})
    assert lines(path) == [{"type": "lab", "format": 1, "tasks": ["ipa"], "items": 2}]
    lab.append(row(item=1, exact=True, reply="apple 🍎"))
    lab.append(row(task="bias", item=1, variant="plain"))
    lab.append({"type": "failed", "model": "big", "error": "out of memory"})
    lab.append({"type": "progress-note", "text": "a record type from a later version"})
    assert len(lines(path)) == 5
    again = LabFile.open(path)
    assert again.header == lab.header and again.header["tasks"] == ["ipa"]
    assert [r["task"] for r in again.rows] == ["ipa", "bias"] and again.rows[0]["reply"] == "apple 🍎"
    assert again.failures == {"big": "out of memory"}
    assert again.done() == {("ipa", 1, "", "small"), ("bias", 1, "plain", "small")}
    again.append(row(model="big"))  # a resumed run: the model works again
    assert again.failures == {} and LabFile.open(path).failures == {}


def test_an_appended_line_is_on_disk_before_append_returns(tmp_path: Path) -> None:
    """A process killed (SIGKILL: no cleanup, no buffers flushed) right after append has the row written."""
    path = tmp_path / "run.jsonl"
    writer = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tui.lab.results import LabFile
        lab = LabFile.create(Path({str(path)!r}), {{"tasks": ["ipa"]}})
        lab.append({{"type": "row", "task": "ipa", "item": 1, "variant": None, "model": "m", "exact": True}})
        print("appended", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "appended\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert LabFile.open(path).done() == {("ipa", 1, "", "m")}


def test_a_torn_last_line_is_dropped_and_cut_off_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lab = LabFile.create(path, {"tasks": ["ipa"]})
    lab.append(row(item=1))
    with path.open("ab") as file:
        file.write(b'{"type": "row", "task": "ipa", "item": 2, "vari')  # killed mid-write
    resumed = LabFile.open(path)
    assert resumed.done() == {("ipa", 1, "", "small")}
    resumed.append(row(item=2, exact=True))
    assert [record.get("item") for record in lines(path)] == [None, 1, 2]  # every line whole JSON
    assert LabFile.open(path).done() == {("ipa", 1, "", "small"), ("ipa", 2, "", "small")}


def test_creating_over_an_existing_file_is_refused_naming_resume(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    LabFile.create(path, {"tasks": ["ipa"]}).append(row())
    with pytest.raises(LabFileError, match="already exists; continue it with --resume") as refused:
        LabFile.create(path, {"tasks": ["arithmetic"]})
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)
    assert len(lines(path)) == 2  # untouched


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "not a lab results file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a lab results file"),
        (b'{"type": "session", "format": 1}\n', "not a lab results file"),
        (b"hello\nworld\n", "not a lab results file"),
        (b'{"type": "lab", "format": 2}\n', "newer Ladder (lab format 2)"),
        (b'{"type": "lab", "format": 1}\nnot json\n{"type": "row"}\n', "line 2 is not a lab record"),
    ],
)
def test_a_file_that_is_not_a_lab_file_or_is_newer_is_refused_in_one_line(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "other.jsonl"
    path.write_bytes(content)
    with pytest.raises(LabFileError, match=re.escape(says)) as refused:
        LabFile.open(path)
    assert "\n" not in str(refused.value)


def test_a_missing_file_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match=r"^cannot read .*missing\.jsonl: No such file or directory$"):
        LabFile.open(tmp_path / "missing.jsonl")


def test_the_header_records_the_run(scenarios: dict[str, Scenario]) -> None:
    tasks = lab_tasks(["ipa", "chain-of-thought"], scenarios, 20, 3)
    card = ModelCard("small", "Small", "f", 135_000_000, "Q8_0", 100, "ab" * 32, 2048, (), instruct=False)
    header = lab_header(tasks, [card], {"small": "few-shot"}, 20, 3, {"schedule": "auto", "cores": 2})
    assert header["tasks"] == ["ipa", "chain-of-thought"] and (header["items"], header["seed"]) == (20, 3)
    assert header["shots"] == SHOTS and header["shots_used"] == {"ipa": SHOTS, "chain-of-thought": 0}
    (model,) = header["models"]
    assert (model["id"], model["params"], model["instruct"]) == ("small", 135_000_000, False)
    assert model["sha256"] == "ab" * 32
    assert "endpoint" not in model and header["forms"] == {"small": "few-shot"}
    assert header["params"]["ipa"]["temperature"] == 0.0 and header["params"]["ipa"]["max_tokens"] == 16
    assert header["titles"] == {"ipa": scenarios["ipa"].title, "chain-of-thought": scenarios["chain-of-thought"].title}
    assert header["engine"] == {"schedule": "auto", "cores": 2} and header["version"] and header["created"]
    json.dumps(header)  # all of it can be written


# --- cells -----------------------------------------------------------------------------------


def test_cells_count_bound_and_average_each_task_variant_and_model() -> None:
    rows = [
        *(row("ipa", n, "big", exact=n <= 9, probability=0.5, partial=None) for n in range(1, 13)),
        *(row("ipa", n, "small", exact=n == 1, probability=None) for n in range(1, 4)),
        row("cot", 1, "small", "plain", exact=True, partial=1.0),
        row("cot", 1, "small", "step", exact=False, partial=0.5),
        row("cot", 2, "small", "plain", exact=None, partial=0.0),  # the check did not apply: not counted
        row("mc", 1, "small", exact=True, probability=0.6, probability_pick=True),
        row("mc", 2, "small", exact=False, probability=0.2, probability_pick=False),
        row("mc", 2, "small", exact=True, probability=0.4, probability_pick=True),  # written again: the last counts
    ]
    found = cells(rows, {"small": "worker crashed"}, models=["small", "big"])
    assert [(c.task, c.variant, c.model) for c in found] == [
        ("ipa", None, "small"),  # the header's model order, not the rows'
        ("ipa", None, "big"),
        ("cot", "plain", "small"),
        ("cot", "step", "small"),
        ("mc", None, "small"),
    ]
    small, big = found[0], found[1]
    assert (big.n, big.exact, big.accuracy) == (12, 9, 0.75) and not big.too_few and big.failed is None
    assert (big.exact_low, big.exact_high) == wilson(9, 12)
    assert big.probability == pytest.approx(0.5) and big.partial is None and big.probability_pick is None
    assert (small.n, small.exact, small.too_few, small.probability) == (3, 1, True, None)
    assert small.failed == "worker crashed"
    plain = found[2]
    assert (plain.n, plain.exact, plain.partial) == (1, 1, pytest.approx(0.5))
    choice = found[4]
    assert (choice.n, choice.exact) == (2, 2)
    assert choice.probability == pytest.approx(0.5) and choice.probability_pick == 1.0
    assert MIN_ITEMS == 10


def test_a_model_that_failed_before_any_row_has_an_empty_failed_cell_per_task() -> None:
    found = cells([row("ipa", 1, "small", exact=True)], {"big": "cannot load"}, models=["small", "big"])
    assert [(c.model, c.n, c.failed) for c in found] == [("small", 1, None), ("big", 0, "cannot load")]
    assert (found[1].accuracy, found[1].exact_low, found[1].exact_high) == (0.0, 0.0, 1.0)


def test_a_reply_cut_inside_a_character_is_written_and_read_back_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    LabFile.create(path, {}).append(row(reply="half an emoji \ud83d, then 🍎"))
    assert LabFile.open(path).rows[0]["reply"] == "half an emoji \ud83d, then 🍎"
