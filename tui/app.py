"""The chat app: every model of the lineup in its own pane, every turn sent to all."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.screen import Screen

from tui import paths
from tui.cards import Catalog, ModelCard
from tui.engine.base import Backend
from tui.engine.events import SamplingParams
from tui.scenario import Scenario
from tui.session import Session

MakeBackend = Callable[[ModelCard], Backend]


@dataclass
class AppConfig:
    catalog: Catalog
    cards: list[ModelCard]
    make_backend: MakeBackend
    sessions_dir: Path
    lineup: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    system: str = ""
    engine_info: dict[str, Any] = field(default_factory=dict)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    scenario: Scenario | None = None  # the one to start in
    problems: list[str] = field(default_factory=list)  # bad card or scenario files, one line each


class LadderApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Ladder"

    def __init__(self, config: AppConfig) -> None:
        super().__init__()
        self.config = config
        self.session = Session(
            [config.make_backend(card) for card in config.cards], sessions_dir=config.sessions_dir,
            params=config.params, model_params=config.model_params, system=config.system,
            lineup=config.lineup, engine_info=config.engine_info, scenario=config.scenario,
        )

    def on_mount(self) -> None:
        from tui.screens.chat import ChatScreen

        for problem in self.config.catalog.problems + self.config.problems:
            self.notify(problem, title="Could not read a file", severity="warning", timeout=10)
        self.push_screen(ChatScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        commands = getattr(screen, "palette_commands", None)
        if commands:
            yield from commands()

    async def on_unmount(self) -> None:
        await self.session.close()


def run_app(args: argparse.Namespace) -> int:
    from tui.cards import load_catalog
    from tui.cli import UsageError, chosen_cards, model_params, sampling_params
    from tui.scenario import load_scenarios
    from tui.engine.local import Engine

    catalog = load_catalog()
    cards = chosen_cards(args, catalog)
    scenarios, problems = load_scenarios()
    if args.scenario and args.scenario not in scenarios:
        raise UsageError(f"no scenario '{args.scenario}' (known: {', '.join(sorted(scenarios))})")
    scenario = scenarios.get(args.scenario) if args.scenario else None
    engine = Engine(policy=args.schedule)
    config = AppConfig(
        catalog=catalog, cards=cards, make_backend=engine.model, sessions_dir=paths.sessions_dir(args.sessions_dir),
        lineup=args.lineup or (None if args.model else "offline"),
        params=sampling_params(args, SamplingParams().with_changes(scenario.params) if scenario else None),
        model_params=model_params(args, cards), system=args.system or (scenario.system if scenario else ""),
        engine_info={"schedule": args.schedule, "cores": engine.cores},
        scenarios=scenarios, scenario=scenario, problems=problems,
    )
    LadderApp(config).run()
    return 0
