"""`ladder scenarios list | show ID`."""

from __future__ import annotations

import argparse
import random
import textwrap

from tui.commands import output
from tui.commands.options import UsageError
from tui.scenario import load_scenarios


def run(args: argparse.Namespace) -> int:
    scenarios, problems = load_scenarios()
    for problem in problems:
        output.warn(problem)
    if args.scenarios_command == "list":
        rows: list[tuple[str, ...]] = [("id", "title", "items", "check")]
        for scenario in sorted(scenarios.values(), key=lambda s: s.id):
            count = scenario.item_count
            items = "generated" if count is None else str(count) if count else "-"
            rows.append((scenario.id, scenario.title, items, scenario.check or "-"))
        print(output.table(rows))
        return 0
    if args.id not in scenarios:
        raise UsageError(f"no scenario '{args.id}' (known: {', '.join(sorted(scenarios))})")
    scenario = scenarios[args.id]
    print(f"{scenario.title} ({scenario.id})\n")
    print(textwrap.fill(scenario.description, 88) + "\n")
    print(f"system prompt: {scenario.system or '(none)'}")
    for user, assistant in scenario.opening:
        print(f"opening: user: {user}\n         assistant: {assistant}")
    if scenario.first_turn:
        print(f"first turn: {scenario.first_turn}")
    print(f"suggested parameters: {scenario.params or '(defaults)'}")
    print(f"check: {scenario.check or '(none)'}")
    count = scenario.item_count
    if scenario.has_items:
        shown = count if count is not None else 4
        print(f"\nitems ({'generated afresh each time; examples' if count is None else count}):")
        rng = random.Random(0)
        for n in range(shown):
            item = scenario.item(n, rng)
            expected = f"  → {item.answer}" if item.answer else ""
            variant = f" [{item.variant}]" if item.variant else ""
            print(f"{n + 1:>3}.{variant} {item.prompt.splitlines()[0]}{expected}")
    print(f"\nfrom {scenario.origin}")
    return 0
