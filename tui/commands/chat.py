"""`ladder [chat]`: the chat app, every model of the lineup in its own pane."""

from __future__ import annotations

import argparse

from tui.app import AppConfig, LadderApp
from tui.commands.options import session_options
from tui.commands.output import error


def run(args: argparse.Namespace) -> int:
    options = session_options(args)
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
    app.run()
    if app.unsaved_on_exit:  # said after the app has closed, where the terminal shows it
        error(app.unsaved_on_exit)
        return 1
    return 0
