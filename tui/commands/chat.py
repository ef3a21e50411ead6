"""`ladder [chat]`: the chat app, every model of the lineup in its own pane."""

from __future__ import annotations

import argparse

from tui.app import AppConfig, LadderApp
from tui.blind import refusal
from tui.commands.options import session_options
from tui.commands.output import error


def run(args: argparse.Namespace) -> int:
    options = session_options(args)
    if args.blind and (problem := refusal(len(options.cards))):
        error(f"--blind {problem}; add models with --model or --lineup")
        return 2
    config = AppConfig(
        catalog=options.catalog,
        cards=options.cards,
        make_backend=options.backend,
        sessions_dir=options.sessions_dir,
        lineup=options.lineup,
        params=options.params,
        model_params=options.model_params,
        system=options.system,
        engine_info=options.engine_info,
        scenarios=options.scenarios,
        scenario=options.scenario,
        problems=options.problems,
    )
    app = LadderApp(config)
    app.session.logprobs = args.logprobs  # record token probabilities from the first turn (Settings turns it off)
    if args.blind:
        app.session.start_blind()
    app.run()
    if app.unsaved_on_exit:  # said after the app has closed, where the terminal shows it
        error(app.unsaved_on_exit)
        return 1
    return 0
