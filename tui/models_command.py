"""`ladder models list | fetch | verify`."""

from __future__ import annotations

import argparse
import sys

from tui import store
from tui.ask import _progress_printer
from tui.cards import Catalog, ModelCard, load_catalog, size_label
from tui.cli import UsageError, report_problems


def _targets(catalog: Catalog, target: str) -> list[ModelCard]:
    if target in catalog.cards:
        return [catalog.cards[target]]
    if target in catalog.lineups:
        return [catalog.cards[card_id] for card_id in catalog.lineups[target].models]
    raise UsageError(f"'{target}' is neither a model card nor a lineup; see `ladder models list`")


def list_models(catalog: Catalog) -> str:
    rows = [("id", "family", "params", "quant", "size", "source", "present")]
    for card in sorted(catalog.cards.values(), key=lambda c: (c.family, c.params)):
        found = store.find_local(card)
        source = found[1] if found else card.sources[0]
        rows.append((card.id, card.family, card.params_label, card.quant, size_label(card.size),
                     f"{source.kind}: {source.describe()}", "yes" if found else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    for lineup in catalog.lineups.values():
        lines.append(f"lineup {lineup.name}: {' < '.join(lineup.models)}" + (f"  ({lineup.description})" if lineup.description else ""))
    return "\n".join(lines)


def run_models(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    report_problems(catalog)
    if args.models_command == "list":
        print(list_models(catalog))
        return 0
    if args.models_command == "fetch":
        failures = 0
        for card in _targets(catalog, args.target):
            try:
                path = store.ensure_file(card, _progress_printer())
                print(f"{card.id}: {path}")
            except store.ModelUnavailable as error:
                print(f"ladder: {error}", file=sys.stderr)
                failures += 1
        return 1 if failures else 0
    cards = _targets(catalog, args.target) if args.target else [c for c in catalog.cards.values() if store.find_local(c)]
    failures = 0
    for card in cards:
        try:
            print(store.verify(card, _progress_printer()))
        except store.ModelUnavailable as error:
            print(f"ladder: {error}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0
