"""The `auto` schedule: what it predicts and chooses from step times, the order it measures the
policies in, the store of step times in the cache, one choice per turn, the title line that
shows it, and a real turn teaching it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chat_app import loaded
from scripted import ScriptedModel, card
from waiting import until

from tui.app import AppConfig, LadderApp
from tui.cards import Catalog, ModelCard, load_catalog
from tui.engine.autoschedule import ModelSteps, StepStore, choose, machine_key, model_key
from tui.engine.events import Finished, SamplingParams, StepTimes, TurnEvent, TurnRequest
from tui.engine.local import Engine, LocalModel
from tui.engine.schedule import Plan


def reply(
    decode_s: float | None = None,
    decode_threads: int = 0,
    prompt_s: float | None = None,
    prompt_threads: int = 0,
    prompt_tokens: int = 40,
) -> Finished:
    """A finished local reply with these step times (its whole prompt evaluated)."""
    return Finished(
        "done",
        "stop",
        "text",
        prompt_tokens=prompt_tokens,
        steps=StepTimes(prompt_s, prompt_threads, decode_s, decode_threads),
    )


def measured(decode_s: dict[int, float], prompt_s_per_token: dict[int, float] | None = None) -> ModelSteps:
    return ModelSteps(
        model="m",
        replies=3,
        decode_s=decode_s,
        prompt_s_per_token=prompt_s_per_token or {},
        prompt_tokens=40.0,
    )


EVERY_PROMPT = {1: 0.004, 2: 0.002}  # prompt times per token, scaling with the cores: split brings nothing


# --- prediction and choice ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one_core", "two_cores", "policy", "note"),
    [
        # Two models side by side on one core each take one 1-core step; in turn, two 2-core steps.
        (1.0, 0.6, "mixed", "auto → mixed (predicted 0.83× baton, from 3 turns here)"),
        (1.0, 0.45, "baton", "auto → baton (predicted 0.90× mixed, from 3 turns here)"),
        (1.0, 0.5, "baton", "auto → baton (predicted 1.00× mixed, from 3 turns here)"),  # a tie: baton
    ],
)
def test_two_equal_models_on_two_cores_run_side_by_side_unless_two_cores_more_than_halve_a_step(
    one_core: float, two_cores: float, policy: str, note: str
) -> None:
    steps = measured({1: one_core, 2: two_cores}, EVERY_PROMPT)
    choice = choose({"a": steps, "b": steps}, ["a", "b"], cores=2)
    assert (choice.policy.name, choice.note) == (policy, note)
    assert choice.predicted == {"baton": 2 * two_cores, "mixed": one_core, "split": one_core}


def test_the_slowest_model_alone_bounds_side_by_side() -> None:
    """Four models on two cores: side by side, the two lanes would share 19 s of 1-core steps, but
    the largest model's own 12 s step cannot be shared: in turn, the 10.4 s of 2-core steps win."""
    known = {
        "135m": measured({1: 1.0, 2: 0.6}, EVERY_PROMPT),
        "270m": measured({1: 2.0, 2: 1.1}, EVERY_PROMPT),
        "0.5b": measured({1: 4.0, 2: 2.2}, EVERY_PROMPT),
        "1.5b": measured({1: 12.0, 2: 6.5}, EVERY_PROMPT),
    }
    choice = choose(known, list(known), cores=2)
    assert choice.policy.name == "baton"
    assert choice.predicted["baton"] == pytest.approx(10.4) and choice.predicted["mixed"] == 12.0


def test_more_models_than_cores_share_the_lanes() -> None:
    """Four equal models on two cores: two lanes of two 1-core steps each (2 s) beat four 2-core
    steps in turn (2.2 s)."""
    steps = measured({1: 1.0, 2: 0.55}, EVERY_PROMPT)
    choice = choose({"m": steps}, ["m"] * 4, cores=2)
    assert choice.policy.name == "mixed" and choice.predicted["mixed"] == 2.0
    assert choice.predicted["baton"] == pytest.approx(2.2)


def test_many_cores_give_each_model_a_share() -> None:
    """Three models on 16 cores: 5 cores each, side by side, so the slowest 5-core step is the time."""
    prompts = {5: 0.013, 16: 0.004}
    known = {"a": measured({5: 0.1, 16: 0.09}, prompts), "b": measured({5: 0.3, 16: 0.2}, prompts)}
    choice = choose(known, ["a", "b", "b"], cores=16)
    assert choice.predicted == {"baton": pytest.approx(0.49), "mixed": 0.3, "split": 0.3}
    assert choice.policy.name == "mixed"


@pytest.mark.parametrize(
    ("prompts", "policy"),
    [
        ({1: 0.003, 2: 0.002}, "split"),  # two 1-core prompts side by side (0.12 s) beat two 2-core ones (0.16 s)
        ({1: 0.004, 2: 0.002}, "mixed"),  # as fast: mixed, whose prompts on every core come first to each pane
        ({1: 0.003}, "mixed"),  # no all-core prompt measured: nothing says split is better
    ],
)
def test_split_is_chosen_over_mixed_only_when_its_prompts_are_measured_faster(
    prompts: dict[int, float], policy: str
) -> None:
    steps = measured({1: 1.0, 2: 0.6}, prompts)
    choice = choose({"a": steps, "b": steps}, ["a", "b"], cores=2)
    assert choice.policy.name == policy
    if policy == "split":
        assert choice.note == "auto → split (predicted 0.83× baton, prompts 0.75× mixed's, from 3 turns here)"


@pytest.mark.parametrize(("models", "cores", "why"), [(1, 4, "one model"), (3, 1, "one core")])
def test_with_one_model_or_one_core_every_policy_is_the_same(models: int, cores: int, why: str) -> None:
    choice = choose({}, ["m"] * models, cores)
    assert choice.policy.name == "baton"
    assert choice.note == f"auto → baton ({why}: every policy runs the same)"


def test_auto_measures_baton_then_mixed_then_split_before_it_predicts() -> None:
    """A policy that lacks a measurement for any running model runs first, so the first turns
    of a lineup measure each; from then on the prediction decides."""
    known = {"a": ModelSteps(), "b": ModelSteps()}

    def chosen() -> tuple[str, str]:
        choice = choose(known, ["a", "b"], cores=2)
        return choice.policy.name, choice.note

    assert chosen() == ("baton", "auto → baton (measuring: no 2-core step times yet)")
    known["a"].learn(reply(decode_s=0.5, decode_threads=2, prompt_s=0.08, prompt_threads=2))
    assert chosen()[0] == "baton"  # b is not measured yet
    known["b"].learn(reply(decode_s=0.5, decode_threads=2, prompt_s=0.08, prompt_threads=2))
    assert chosen() == ("mixed", "auto → mixed (measuring: no 1-core step times yet)")
    for steps in known.values():
        steps.learn(reply(decode_s=0.8, decode_threads=1, prompt_s=0.08, prompt_threads=2))
    assert chosen() == ("split", "auto → split (measuring: no 1-core prompt times yet)")
    for steps in known.values():
        steps.learn(reply(decode_s=0.8, decode_threads=1, prompt_s=0.16, prompt_threads=1))
    assert chosen() == ("mixed", "auto → mixed (predicted 0.80× baton, from 3 turns here)")


def test_step_times_are_weighted_means_by_thread_count() -> None:
    steps = ModelSteps()
    assert steps.learn(reply(decode_s=1.0, decode_threads=2, prompt_s=0.4, prompt_threads=2, prompt_tokens=40))
    assert steps.learn(reply(decode_s=2.0, decode_threads=2, prompt_s=0.4, prompt_threads=1, prompt_tokens=20))
    assert steps.learn(reply(decode_s=3.0, decode_threads=1))
    assert not steps.learn(reply())  # a reply that failed before its prompt teaches nothing
    assert steps.decode_s == {2: pytest.approx(1.3), 1: 3.0}  # 0.7 × 1.0 + 0.3 × 2.0
    assert steps.prompt_s_per_token == {2: 0.01, 1: 0.02}
    assert steps.prompt_tokens == pytest.approx(34.0) and steps.replies == 3


# --- the store ----------------------------------------------------------------------------------

SMALL = card("small", 135_000_000)


def test_step_times_persist_per_machine_and_core_count(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "schedule.json"
    store = StepStore(2, path)
    store.learn(SMALL, reply(decode_s=0.02, decode_threads=2, prompt_s=0.4, prompt_threads=2))
    store.learn(SMALL, reply(decode_s=0.03, decode_threads=1))
    again = StepStore(2, path)
    assert again.models == store.models
    assert again.models[model_key(SMALL)].decode_s == {2: 0.02, 1: 0.03}
    assert StepStore(4, path).models == {}  # another core count is another machine
    saved = json.loads(path.read_text())
    assert saved["machines"][machine_key(2)][model_key(SMALL)]["model"] == "small"
    assert [p.name for p in path.parent.iterdir()] == ["schedule.json"]  # written whole, by a rename


def test_models_learnt_by_another_app_meanwhile_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    mine, theirs = StepStore(2, path), StepStore(2, path)
    other = card("other", 270_000_000)
    theirs.learn(other, reply(decode_s=0.05, decode_threads=2))
    mine.learn(SMALL, reply(decode_s=0.02, decode_threads=2))
    assert set(StepStore(2, path).models) == {model_key(SMALL), model_key(other)}


def damaged_entry(**fields: object) -> str:
    """A file whose one entry for this machine has these fields over a good entry's."""
    entry = {**ModelSteps(model="x", replies=1, decode_s={2: 0.02}).to_json(), **fields}
    return json.dumps({"version": 1, "machines": {machine_key(2): {"x": entry}}})


@pytest.mark.parametrize(
    "damage",
    [
        "{not json",
        "[]",
        json.dumps({"version": 1, "machines": []}),
        json.dumps({"version": 2, "machines": {}}),  # a later format: as if absent
        damaged_entry(replies="many"),
        damaged_entry(model=None),
        damaged_entry(decode_s=[0.02]),
        damaged_entry(decode_s={"2": -1}),
        damaged_entry(decode_s={"two": 0.02}),
        damaged_entry(decode_s={"0": 0.02}),
        damaged_entry(prompt_tokens="many"),
        damaged_entry(prompt_s_per_token={"2": True}),
    ],
    ids=[
        "not JSON",
        "a list",
        "machines a list",
        "a later format",
        "replies not a count",
        "no model",
        "steps a list",
        "a negative time",
        "threads not a number",
        "no threads",
        "prompt tokens not a number",
        "a boolean time",
    ],
)
def test_a_damaged_file_is_ignored_and_rewritten(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "schedule.json"
    path.write_text(damage)
    store = StepStore(2, path)
    assert store.models == {}
    store.learn(SMALL, reply(decode_s=0.02, decode_threads=2))
    assert StepStore(2, path).models[model_key(SMALL)].decode_s == {2: 0.02}


def test_a_damaged_entry_leaves_the_others(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    good = ModelSteps(model="small", replies=1, decode_s={2: 0.02}).to_json()
    bad = {"model": "x", "replies": 1, "decode_s": "fast"}
    path.write_text(json.dumps({"version": 1, "machines": {machine_key(2): {"good": good, "bad": bad}}}))
    assert list(StepStore(2, path).models) == ["good"]


def test_a_cache_that_cannot_be_written_keeps_what_was_learnt_in_memory(tmp_path: Path) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    store = StepStore(2, blocked / "schedule.json")  # its folder cannot be made
    store.learn(SMALL, reply(decode_s=0.02, decode_threads=2))
    assert store.models[model_key(SMALL)].decode_s == {2: 0.02}


# --- the engine: one choice per turn ------------------------------------------------------------


async def test_the_models_of_one_turn_all_get_the_plan_chosen_as_it_started(tmp_path: Path) -> None:
    steps = StepStore(2, tmp_path / "schedule.json")
    cards = load_catalog().cards
    engine = Engine("auto", cores=2, steps=steps)
    try:
        models = [engine.model(cards[name]) for name in ("smollm2-135m-instruct", "gemma-3-270m")]
        for model in models:
            model.state = "ready"  # as if loaded
            steps.models[model_key(model.card)] = measured({1: 1.0, 2: 0.45}, EVERY_PROMPT)  # baton's
        first = engine.plan()
        assert first == Plan(prompt_threads=2, decode_threads=2) and engine.choice.policy.name == "baton"
        models[0].state = "busy"  # its turn started
        for model in models:
            steps.models[model_key(model.card)] = measured({1: 1.0, 2: 0.6}, EVERY_PROMPT)  # now mixed's
        assert engine.plan() == first  # the second model of the same turn
        models[0].state = "ready"  # the turn is over: the next one chooses afresh
        assert engine.plan() == Plan(prompt_threads=2, decode_threads=1)
        assert models[0].schedule_note == "auto → mixed (predicted 0.83× baton, from 3 turns here)"
    finally:
        await engine.close()


async def test_only_replies_of_shared_turns_teach_the_store(tmp_path: Path) -> None:
    """Alone, a model's steps are quicker than when others run (its weights stay in the CPU's
    caches): only turns of several models are what `auto` predicts."""
    engine = Engine("baton", cores=2, steps=StepStore(2, tmp_path / "schedule.json"))
    try:
        model = engine.model(SMALL)
        model.state = "ready"
        engine.plan()
        engine.learn(SMALL, reply(decode_s=0.02, decode_threads=2), engine.choice)
        assert engine.steps.models == {}
        engine.model(SMALL).state = "ready"
        engine.plan()
        assert engine.choice.models == 2
        engine.learn(SMALL, reply(decode_s=0.02, decode_threads=2), engine.choice)
        assert engine.steps.models[model_key(SMALL)].decode_s == {2: 0.02}
    finally:
        await engine.close()


def test_auto_is_the_default_schedule() -> None:
    from tui.cli import build_parser

    assert build_parser().parse_args(["ask", "hi"]).schedule == "auto"


# --- the title line -----------------------------------------------------------------------------


class ScheduledModel(ScriptedModel):
    """A scripted model whose engine's note changes as each turn starts, as a local model's does."""

    schedule_note = "auto"

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        self.schedule_note = f"auto → mixed (turn {len(self.requests) + 1})"
        async for event in super().turn(request):
            yield event


async def test_the_title_line_shows_the_schedule_chosen_for_each_turn(tmp_path: Path) -> None:
    cards = [card("a", 135_000_000), card("b", 270_000_000)]
    config = AppConfig(
        catalog=Catalog(cards={c.id: c for c in cards}),
        cards=cards,
        make_backend=lambda c: ScheduledModel(c),
        sessions_dir=tmp_path / "sessions",
        engine_info={"schedule": "auto", "cores": 2},
    )
    app = LadderApp(config)

    def title() -> str:
        return str(app.screen.query_one("#title").render())

    async with app.run_test() as pilot:
        await loaded(pilot)
        assert " · auto, 2 cores · " in title()
        for note in ("auto → mixed (turn 1), 2 cores", "auto → mixed (turn 2), 2 cores"):
            await pilot.press("h", "i", "enter")
            await until(pilot, lambda note=note: note in title(), what=f"'{note}' in the title")
    assert json.loads(next((tmp_path / "sessions").glob("*.jsonl")).read_text().splitlines()[0])["engine"] == {
        "schedule": "auto",
        "cores": 2,
    }


# --- a real turn --------------------------------------------------------------------------------


def smollm2() -> ModelCard:
    return load_catalog().cards["smollm2-135m-instruct"]


async def answer(models: list[LocalModel], text: str) -> None:
    """One turn of every model at once, as a session sends it."""
    request = TurnRequest([{"role": "user", "content": text}], SamplingParams(temperature=0.0, max_tokens=8, seed=1))

    async def last(model: LocalModel) -> TurnEvent:
        return [event async for event in model.turn(request)][-1]

    for finished in await asyncio.gather(*(last(model) for model in models)):
        assert isinstance(finished, Finished) and finished.status == "done", finished


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_an_auto_engine_learns_from_a_real_turn_and_measures_the_next_policy(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    engine = Engine("auto", cores=2, steps=StepStore(2, path))
    models = [engine.model(smollm2()), engine.model(smollm2())]
    key = model_key(smollm2())
    try:
        await asyncio.gather(*(model.load() for model in models))
        await answer(models, "Name a colour.")
        assert engine.choice.note == "auto → baton (measuring: no 2-core step times yet)"
        learnt = StepStore(2, path).models[key]  # from the file, as a later session reads it
        assert learnt.replies == 2 and set(learnt.decode_s) == {2} and set(learnt.prompt_s_per_token) == {2}
        assert 0 < learnt.decode_s[2] < 1 and learnt.prompt_tokens > 0
        await answer(models, "And another?")
        assert engine.choice.note == "auto → mixed (measuring: no 1-core step times yet)"
        assert set(StepStore(2, path).models[key].decode_s) == {1, 2}
    finally:
        await engine.close()
