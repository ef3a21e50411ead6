"""`ladder models list | fetch | verify`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tui import store
from tui.cards import Catalog, ModelCard, load_catalog
from tui.commands import output
from tui.commands.options import UsageError
from tui.labels import params_label, size_label


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    for problem in catalog.problems:
        output.warn(problem)
    if args.models_command == "list" and args.endpoint:
        print("\n\n".join(list_served(spec, args.api_key_env) for spec in args.endpoint))
        return 0
    if args.models_command == "list":
        print(list_models(catalog))
        return 0
    if args.models_command == "fetch":
        return _for_each(
            _targets(catalog, args.target),
            lambda card: f"{card.id}: {store.ensure_file(card, output.progress_printer())}",
        )
    if args.target:
        cards = _targets(catalog, args.target)
    else:  # every model whose file is here
        cards = [card for card in catalog.cards.values() if store.find_local(card)]
    return _for_each(cards, lambda card: store.verify(card, output.progress_printer()))


def list_models(catalog: Catalog) -> str:
    rows = [("id", "family", "params", "quant", "size", "source", "present")]
    for card in sorted(catalog.cards.values(), key=lambda c: (c.family, c.order)):
        found = store.find_local(card)
        source = found[1] if found else card.sources[0]
        rows.append(
            (
                card.id,
                card.family,
                params_label(card.params),
                card.quant,
                size_label(card.size),
                f"{source.kind}: {source.describe()}",
                "remote" if card.endpoint else "yes" if found else "no",
            )
        )
    lines = [output.table(rows, align_numbers=False), ""]
    for lineup in catalog.lineups.values():
        about = f"  ({lineup.description})" if lineup.description else ""
        lines.append(f"lineup {lineup.name}: {' < '.join(lineup.models)}{about}")
    return "\n".join(lines)


def list_served(spec: str, api_key_env: str | None) -> str:
    """What one server serves, as `ladder models list --endpoint URL` shows it."""
    from tui.engine.endpoints import RemoteError, endpoint_cards

    try:
        cards = endpoint_cards(spec, api_key_env)
    except RemoteError as error:
        raise UsageError(f"--endpoint {spec}: {error}") from None
    rows = [("model (as the server names it)", "params", "quant", "size", "context", "pane id")]
    for card in cards:
        assert card.endpoint is not None
        rows.append(
            (
                card.endpoint.model,
                params_label(card.params),
                card.quant,
                size_label(card.size),
                str(card.context),
                card.id,
            )
        )
    url = cards[0].endpoint.url if cards and cards[0].endpoint else spec
    return "\n".join(
        [
            f"{url}: {len(cards)} model(s)",
            output.table(rows, align_numbers=False),
            f"one of them: ladder --endpoint '{url}#MODEL'",
        ]
    )


def _targets(catalog: Catalog, target: str) -> list[ModelCard]:
    if target in catalog.cards:
        return [catalog.cards[target]]
    if target in catalog.lineups:
        return [catalog.cards[card_id] for card_id in catalog.lineups[target].models]
    raise UsageError(f"'{target}' is neither a model card nor a lineup; see `ladder models list`")


def _for_each(cards: list[ModelCard], action: Callable[[ModelCard], str]) -> int:
    """Prints what `action` says of each card; a card whose file cannot be had is reported,
    the others go on, and the exit code is 1."""
    failures = 0
    for card in cards:
        try:
            print(action(card))
        except store.ModelUnavailable as error:
            output.error(str(error))
            failures += 1
    return 1 if failures else 0
