"""The options that `chat`, `ask` and `lab` share, checked: the models, the scenario, the conversation
settings, the sessions folder and the engine; and the error every command raises for bad input."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui import paths
from tui.cards import Catalog, ModelCard, load_catalog, select_models
from tui.engine.events import PARAM_NAMES, SamplingParams

if TYPE_CHECKING:  # imported when the options are read, not when `ladder` starts
    from tui.engine.base import Backend
    from tui.engine.local import Engine
    from tui.scenario import Scenario


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def check_utf8(text: str, what: str) -> None:
    """Refuse text that is not valid UTF-8. Python hands such bytes over as lone surrogates
    (surrogateescape), which no file or terminal can take later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = ord(text[error.start]) & 0xFF
        raise UsageError(
            f"{what} is not valid UTF-8 (byte 0x{byte:02x} at character {error.start + 1}); give it as UTF-8 text"
        ) from None


def sampling_params(args: argparse.Namespace, base: SamplingParams | None = None) -> SamplingParams:
    """The parameters given on the command line, over `base` (defaults, or a scenario's)."""
    given = {name: getattr(args, name) for name in PARAM_NAMES if getattr(args, name, None) is not None}
    try:
        return (base or SamplingParams()).with_changes(given)
    except ValueError as error:
        raise UsageError(str(error)) from None


def model_params(args: argparse.Namespace, cards: list[ModelCard]) -> dict[str, dict[str, Any]]:
    """`--model-param ID:NAME=VALUE` options, checked, grouped by model id."""
    result: dict[str, dict[str, Any]] = {}
    ids = {card.id for card in cards}
    for option in args.model_param:
        model_id, _, assignment = option.partition(":")
        name, _, value = assignment.partition("=")
        if not (model_id and name and value):
            raise UsageError(f"--model-param wants ID:NAME=VALUE, not {option!r}")
        if model_id not in ids:
            raise UsageError(
                f"--model-param names '{model_id}', which is not in this lineup ({', '.join(sorted(ids))})"
            )
        try:
            checked = SamplingParams().with_changes({name: value})
        except ValueError as error:
            raise UsageError(f"--model-param {option}: {error}") from None
        result.setdefault(model_id, {})[name] = getattr(checked, name)
    return result


def chosen_cards(args: argparse.Namespace, catalog: Catalog) -> list[ModelCard]:
    """The cards of `--lineup` and `--model`, with `--gpu-layers` and `--ctx` applied."""
    cards = select_models(catalog, args.lineup, args.model)
    changes = card_changes(args)
    return [replace(card, **changes) for card in cards]


def card_changes(args: argparse.Namespace) -> dict[str, Any]:
    """What `--gpu-layers` and `--ctx` change in every card, checked."""
    changes: dict[str, Any] = {}
    if args.gpu_layers is not None:
        if args.gpu_layers < -1:
            raise UsageError("--gpu-layers must be -1 (all layers) or a number of layers, 0 or more")
        changes["gpu_layers"] = args.gpu_layers
    if args.ctx is not None:
        if args.ctx < 256:
            raise UsageError("--ctx must be at least 256 tokens")
        changes["context"] = args.ctx
    return changes


def endpoint_cards(args: argparse.Namespace) -> list[ModelCard]:
    """The cards of `--endpoint URL[#MODEL]`: every model each server serves, or the one named."""
    from tui.engine.endpoints import RemoteError, endpoint_cards

    if args.stall_timeout <= 0:
        raise UsageError("--stall-timeout must be a positive number of seconds")
    cards: dict[str, ModelCard] = {}
    for spec in args.endpoint:
        try:
            found = endpoint_cards(spec, args.api_key_env)
        except RemoteError as error:
            raise UsageError(f"--endpoint {spec}: {error}") from None
        for card in found:
            assert card.endpoint is not None
            cards[card.id] = replace(
                card,
                sources=(replace(card.sources[0], endpoint=replace(card.endpoint, stall_timeout=args.stall_timeout)),),
            )
    return list(cards.values())


@dataclass
class SessionOptions:
    """What the options of `chat` and `ask` ask for, checked: the models, the scenario,
    the conversation settings, and the engine to run them."""

    catalog: Catalog
    cards: list[ModelCard]
    scenarios: dict[str, Scenario]
    scenario: Scenario | None
    problems: list[str]  # files that could not be read, cards and scenarios alike
    params: SamplingParams
    model_params: dict[str, dict[str, Any]]
    system: str
    lineup: str | None
    sessions_dir: Path
    engine: Engine

    @property
    def engine_info(self) -> dict[str, Any]:
        return {"schedule": self.engine.schedule, "cores": self.engine.cores}

    def backend(self, card: ModelCard) -> Backend:
        return backend_for(card, self.engine)


def backend_for(card: ModelCard, engine: Engine) -> Backend:
    """What runs a card: a server for a remote model, a local worker of `engine` otherwise."""
    from tui.engine.remote import RemoteModel

    return RemoteModel(card) if card.endpoint else engine.model(card)


def lineup_cards(args: argparse.Namespace, catalog: Catalog) -> list[ModelCard]:
    """The cards of `--lineup`, `--model` and `--endpoint`, smallest first."""
    cards = chosen_cards(args, catalog)
    for card in endpoint_cards(args):
        catalog.cards[card.id] = card  # so the app's model list offers it again once removed
        cards = [*[known for known in cards if known.id != card.id], card]
    return sorted(cards, key=lambda card: card.order)


def checked_sessions_dir(override: str | None) -> Path:
    """The sessions folder (`--sessions-dir`, else the default), made sure to take files."""
    sessions_dir = paths.sessions_dir(override)
    try:  # before any model loads: a session that cannot be saved would be lost
        paths.check_sessions_folder(sessions_dir)
    except paths.FolderError as error:
        raise UsageError(f"{error}; choose another with --sessions-dir") from None
    return sessions_dir


def session_options(args: argparse.Namespace) -> SessionOptions:
    from tui.engine.local import Engine
    from tui.scenario import load_scenarios

    check_utf8(args.system, "--system")
    catalog = load_catalog()
    cards = lineup_cards(args, catalog)
    scenarios, scenario_problems = load_scenarios()
    if args.scenario and args.scenario not in scenarios:
        raise UsageError(
            f"no scenario '{args.scenario}' (known: {', '.join(sorted(scenarios))}); see `ladder scenarios list`"
        )
    scenario = scenarios.get(args.scenario) if args.scenario else None
    params = sampling_params(args, SamplingParams().with_changes(scenario.params) if scenario else None)
    per_model = model_params(args, cards)
    sessions_dir = checked_sessions_dir(args.sessions_dir)
    return SessionOptions(
        catalog=catalog,
        cards=cards,
        scenarios=scenarios,
        scenario=scenario,
        problems=catalog.problems + scenario_problems,
        params=params,
        model_params=per_model,
        system=args.system or (scenario.system if scenario else ""),
        lineup=args.lineup or (None if args.model else "offline"),
        sessions_dir=sessions_dir,
        engine=Engine(policy=args.schedule),
    )
