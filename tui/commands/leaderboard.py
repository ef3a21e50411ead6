"""`ladder leaderboard`: the models ranked by the votes in the saved sessions (`tui.leaderboard`)."""

from __future__ import annotations

import argparse

from tui import archive, paths
from tui.commands import output
from tui.commands.options import UsageError
from tui.leaderboard import leaderboard, markdown, method
from tui.textsafe import safe_text


def run(args: argparse.Namespace) -> int:
    directory = paths.sessions_dir(args.sessions_dir)
    try:
        since = archive.parse_day(args.since, "--since")
        board = leaderboard(directory, since=since, scenario=args.scenario, include_all=args.all)
    except ValueError as error:  # a bad date, an unreadable sessions folder
        raise UsageError(str(error)) from None
    for problem in board.ballot.problems:
        output.warn(problem)
    if args.markdown:
        print(safe_text(markdown(board)), end="")
        return 0
    reason = board.empty_reason()
    if reason:
        print(safe_text(reason))
        return 0
    print(safe_text(board.summary()))
    print(output.table(board.rows()))
    for note in board.notes():
        print(safe_text(f"note: {note}"))
    print(method())
    return 0
