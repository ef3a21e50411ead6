"""Scenarios: the built-ins load, checks grade known-good and known-bad replies, items
are generated correctly, and bad user files are reported in one line."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tui.checks import Item, check_choice, chosen_option, last_number, run_check
from tui.labels import CHOICE_LETTERS
from tui.scenario import ScenarioError, load_scenarios, parse_scenario

BUILT_INS = {
    "linux-terminal",
    "emoji-movie",
    "emoji-movie-choices",
    "arithmetic",
    "chain-of-thought",
    "unscramble",
    "ipa",
    "proverbs",
    "bias",
    "free-chat",
}


def test_every_built_in_loads_and_asks_sensible_items() -> None:
    scenarios, problems = load_scenarios()
    assert problems == []
    assert set(scenarios) >= BUILT_INS
    rng = random.Random(1)
    for scenario in scenarios.values():
        assert scenario.title and scenario.description
        count = scenario.item_count
        for n in range(min(count if count is not None else 6, 60)):
            item = scenario.item(n, rng)
            assert item.prompt.strip() and item.index == n + 1
            if scenario.check in ("answer", "choice", "number", "unbiased"):
                # A reply that simply states the right answer passes; a made-up one fails.
                right = item.answer if scenario.check != "unbiased" else "It cannot be determined."
                if scenario.check == "choice":
                    right = CHOICE_LETTERS[item.choices.index(item.answer)]
                assert run_check(scenario.check, right, item).passed, (scenario.id, n, item)
                assert not run_check(scenario.check, "Sorry, I do not know", item).passed, (scenario.id, n)


def test_emoji_scenarios_have_twenty_films_and_five_choices_each() -> None:
    scenarios, _ = load_scenarios()
    films, choices = scenarios["emoji-movie"], scenarios["emoji-movie-choices"]
    assert len(films.items) >= 20 and films.items[0].answer == "Finding Nemo"
    assert [i.answer for i in films.items] == [i.answer for i in choices.items]
    assert all(len(item.choices) == 5 and item.answer in item.choices for item in choices.items)
    assert len({item.choices.index(item.answer) for item in choices.items}) >= 3  # the right letter varies


def test_chain_of_thought_asks_each_problem_plainly_and_step_by_step() -> None:
    scenario = load_scenarios()[0]["chain-of-thought"]
    rng = random.Random(0)
    first, second = scenario.item(0, rng), scenario.item(1, rng)
    assert first.number == second.number and first.variant != second.variant
    assert "step by step" in second.prompt and "step by step" not in first.prompt


def test_generated_arithmetic_is_correct_and_fresh() -> None:
    scenario = load_scenarios()[0]["arithmetic"]
    items = [scenario.item(n, random.Random(n)) for n in range(40)]
    for item in items:
        expression = item.prompt.split("What is ")[1].split("?")[0]
        left, op, right = expression.split()
        assert len(left) == len(right) == (3 if op == "+" else 2)
        assert item.number == (int(left) + int(right) if op == "+" else int(left) * int(right))
    assert len({item.prompt for item in items}) > 30


@pytest.mark.parametrize(
    "kind, item, good, bad",
    [
        ("answer", Item("q", answer="Finding Nemo"), "That is *Finding Nemo* (2003).", "It is The Little Mermaid."),
        ("answer", Item("q", answer="apple", accept=("apples",)), "The word is: APPLE", "pineapple"),
        ("answer", Item("q", regex=r"\bhaste\b.*\bwaste\b"), "Haste makes waste.", "Slow and steady."),
        ("choice", Item("q", answer="Up", choices=("Cars", "Up", "Jaws")), "B. Up", "A"),
        ("choice", Item("q", answer="Up", choices=("Cars", "Up", "Jaws")), "The answer is (b)", "I'd say Jaws."),
        ("number", Item("q", number=936), "347 + 589 = 936", "The answer is 926."),
        ("number", Item("q", number=1234), "So the total is 1,234.", "Twelve hundred"),
        ("code_block", None, "```\n/home/user\n```", "Sure! Here you go:\n```\n/home/user\n```"),
        ("code_block", None, "```bash\ntotal 0\n```", "/home/user"),
        (
            "unbiased",
            Item("q", stereotyped="grandfather"),
            "It cannot be determined from the text.",
            "The grandfather had trouble.",
        ),
    ],
)
def test_checks_pass_good_and_fail_bad_replies(kind: str, item: Item | None, good: str, bad: str) -> None:
    assert run_check(kind, good, item).passed
    result = run_check(kind, bad, item)
    assert result is not None and not result.passed and result.reason


def test_check_reasons_say_what_went_wrong() -> None:
    item = Item("q", answer="Up", choices=("Cars", "Up", "Jaws"))
    assert check_choice("C", item).reason == "chose C. Jaws; right: B"
    unbiased = run_check("unbiased", "The grandson.", Item("q", stereotyped="grandfather"))
    assert unbiased.reason == "answered without evidence"
    assert run_check("code_block", "", None).reason == "empty reply"
    assert chosen_option("A fish story", ("Cars", "Up")) is None  # the article is not option A
    assert last_number("I think 12, no wait, 15.") == 15
    assert run_check("answer", "anything", None) is None  # no item: nothing to grade against


def test_a_broken_user_scenario_is_reported_in_one_line_and_built_ins_still_load() -> None:
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "ladder" / "scenarios"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("id: mine\ntitle: Mine\ndescription: x\ncheck: number\nitems:\n  - prompt: hi\n")
    (folder / "typo.yaml").write_text("id: typo\ntitle: T\ndescription: x\nitmes: []\n")
    (folder / "broken.yaml").write_text("id: [unclosed\n")
    scenarios, problems = load_scenarios()
    assert set(scenarios) >= BUILT_INS and not {"mine", "typo"} & set(scenarios)
    assert sorted(problems) == sorted(
        [
            f"{folder / 'broken.yaml'}: is not valid YAML at line 2",
            f"{folder / 'mine.yaml'}: field 'items[0].number' is needed by the number check",
            f"{folder / 'typo.yaml'}: field 'itmes' is not a scenario field (known: check, description, "
            "fresh_context, generate, id, items, opening, params, system, title, variants)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-m", "tui", "scenarios", "list"], capture_output=True, text=True, env=os.environ
    )
    assert result.returncode == 0 and "linux-terminal" in result.stdout
    assert result.stderr.count("ladder: warning:") == 3 and "Traceback" not in result.stderr


def test_opening_turns_and_first_turn_are_read() -> None:
    scenario = parse_scenario(
        {"id": "x", "title": "X", "description": "d", "opening": [{"user": "2+2?", "assistant": "4"}, {"user": "go"}]},
        "test",
    )
    assert scenario.opening == (("2+2?", "4"),) and scenario.first_turn == "go"


def test_an_item_with_more_choices_than_letters_is_refused() -> None:
    eleven = [f"option {n}" for n in range(len(CHOICE_LETTERS) + 1)]
    with pytest.raises(ScenarioError, match=r"'items\[0\]\.choices' may have at most 10 options"):
        parse_scenario(
            {
                "id": "x",
                "title": "X",
                "description": "d",
                "check": "choice",
                "items": [{"prompt": "Pick one", "answer": "option 0", "choices": eleven}],
            },
            "test",
        )
    ten = parse_scenario(
        {
            "id": "x",
            "title": "X",
            "description": "d",
            "check": "choice",
            "items": [{"prompt": "Pick one", "answer": "option 9", "choices": eleven[:10]}],
        },
        "test",
    )
    assert ten.item(0, random.Random(0)).prompt.splitlines()[1:11] == [
        f"{letter}. option {n}" for n, letter in enumerate(CHOICE_LETTERS)
    ]


@pytest.mark.model
@pytest.mark.parametrize("scenario_id", ["linux-terminal", "emoji-movie"])
def test_a_scenario_run_records_check_results(scenario_id: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui",
            "ask",
            "--scenario",
            scenario_id,
            "--items",
            "2",
            "--model",
            "smollm2-135m-instruct",
            "--max-tokens",
            "24",
            "--sessions-dir",
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "scores" in result.stdout and "check" in result.stdout
    transcript = next(tmp_path.glob(f"*-{scenario_id}.jsonl"))
    events = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert events[0]["scenario"]["id"] == scenario_id
    users = [e for e in events if e["type"] == "user"]
    replies = [e for e in events if e["type"] == "reply"]
    assert len([u for u in users if "item" in u]) == 2
    assert len(replies) == len(users) and all(r["check"]["kind"] in ("code_block", "answer") for r in replies)
    assert all(isinstance(r["check"]["passed"], bool) and r["check"]["reason"] for r in replies)
