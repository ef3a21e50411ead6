"""Model cards and lineups: what each model is, and which models a lineup puts side by side.

Built-in cards live in the top-level `modelcards/` folder (shipped as `tui.modelcards`);
users add cards and lineups in `<config dir>/modelcards/`, where a card with a built-in
id replaces the built-in. A bad file is reported in one line naming the file and the
field, and everything else still loads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from tui import paths
from tui.sources import CardError, Endpoint, Source, parse_source, take_field
from tui.yamlfile import YamlFileError, read_yaml

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
REMOTE_CONTEXT = 4096  # a remote card's context when neither it nor its server says


@dataclass(frozen=True)
class ModelCard:
    id: str
    name: str
    family: str
    params: int | None  # parameter count, None if unknown (a remote model); lineups are ordered by it
    quant: str
    size: int | None  # bytes of the (assembled) file
    sha256: str | None
    context: int  # context length to use, in tokens
    sources: tuple[Source, ...]
    chat_format: str = "gguf"  # "gguf" (the file's template), "template", or a llama-cpp-python name
    chat_template: str | None = None  # Jinja template, when chat_format is "template"
    instruct: bool = True
    license: str | None = None
    gpu_layers: int = 0
    origin: str = ""  # the file this card came from

    @property
    def endpoint(self) -> Endpoint | None:
        """The server of a remote model; None for a local one."""
        return next((source.endpoint for source in self.sources if source.endpoint), None)

    @property
    def order(self) -> tuple[int, int]:
        """The sort key of a lineup: smallest first, models of unknown size last."""
        return (0, self.params) if self.params is not None else (1, 0)

    def header(self) -> dict[str, Any]:
        """The card as recorded in a transcript header."""
        data = asdict(self)
        data.pop("chat_template")
        data["sources"] = [source.describe() for source in self.sources]
        if self.endpoint:  # never the key: only the name of the variable that holds it
            data["endpoint"] = {"host": self.endpoint.host, "model": self.endpoint.model}
        return data


@dataclass(frozen=True)
class Lineup:
    name: str
    models: tuple[str, ...]
    description: str = ""


@dataclass
class Catalog:
    cards: dict[str, ModelCard] = field(default_factory=dict)
    lineups: dict[str, Lineup] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one line each, shown to the user
    # Why a card or lineup the user may ask for is missing: the problem with its file, by card id
    # (or file name, when the id cannot be read) and by lineup name.
    unreadable_cards: dict[str, str] = field(default_factory=dict)
    unusable_lineups: dict[str, str] = field(default_factory=dict)


# --- reading cards -------------------------------------------------------------------------


CARD_FIELDS = {
    "id",
    "name",
    "family",
    "params",
    "quant",
    "size",
    "sha256",
    "context",
    "chat_format",
    "chat_template",
    "instruct",
    "license",
    "gpu_layers",
    "sources",
}


def parse_card(data: Any, origin: str) -> ModelCard:
    if not isinstance(data, dict):
        raise CardError("the file must be a mapping of card fields")
    unknown = sorted(set(data) - CARD_FIELDS)
    if unknown:
        raise CardError(f"field '{unknown[0]}' is not a card field (known: {', '.join(sorted(CARD_FIELDS))})")
    card_id = take_field(data, "id", str)
    if not ID_PATTERN.match(card_id):
        raise CardError(f"field 'id' must be lower-case letters, digits, '.', '_' or '-', not {card_id!r}")
    sha256 = take_field(data, "sha256", str, None)
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise CardError("field 'sha256' must be 64 lower-case hex digits")
    chat_format = take_field(data, "chat_format", str, "gguf")
    chat_template = take_field(data, "chat_template", str, None)
    if chat_template is not None and chat_format == "gguf":
        chat_format = "template"
    if chat_format == "template" and chat_template is None:
        raise CardError("field 'chat_template' is needed when chat_format is 'template'")
    raw_sources = take_field(data, "sources", list)
    if not raw_sources:
        raise CardError("field 'sources' must list at least one source")
    sources = tuple(parse_source(i, raw) for i, raw in enumerate(raw_sources))
    remote = any(source.endpoint for source in sources)
    if remote and len(sources) > 1:
        raise CardError("field 'sources': a card with an endpoint has that one source only")
    card = ModelCard(
        id=card_id,
        name=take_field(data, "name", str),
        family=take_field(data, "family", str, "remote" if remote else ...),
        # A remote model's size may be unknown; a local file's is always known.
        params=take_field(data, "params", int, None if remote else ...),
        quant=take_field(data, "quant", str, "?" if remote else ...),
        size=take_field(data, "size", int, None),
        sha256=sha256,
        context=take_field(data, "context", int, REMOTE_CONTEXT if remote else ...),
        sources=sources,
        chat_format=chat_format,
        chat_template=chat_template,
        instruct=take_field(data, "instruct", bool, True),
        license=take_field(data, "license", str, None),
        gpu_layers=take_field(data, "gpu_layers", int, 0),
        origin=origin,
    )
    for name in ("params", "context"):
        if getattr(card, name) is not None and getattr(card, name) <= 0:
            raise CardError(f"field '{name}' must be positive")
    if card.gpu_layers < -1:
        raise CardError("field 'gpu_layers' must be -1 (all layers) or a number of layers, 0 or more")
    return card


def _parse_lineups(data: Any, origin: str, catalog: Catalog) -> None:
    if not isinstance(data, dict):
        catalog.problems.append(f"{origin}: must map lineup names to lineups")
        return
    for name, body in data.items():
        where = f"{origin}: lineup '{name}'"
        if isinstance(body, list):
            body = {"models": body}
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models) or not models:
            catalog.problems.append(f"{where}: field 'models' must be a non-empty list of card ids")
            continue
        known = [m for m in models if m in catalog.cards]
        for missing in (m for m in models if m not in catalog.cards):
            why = "whose card file could not be read" if missing in catalog.unreadable_cards else "which has no card"
            catalog.problems.append(f"{where}: field 'models' names '{missing}', {why}; left out")
        if known:
            catalog.lineups[str(name)] = Lineup(str(name), tuple(known), str(body.get("description", "")))
            catalog.unusable_lineups.pop(str(name), None)
        else:
            catalog.unusable_lineups[str(name)] = "; ".join(
                catalog.unreadable_cards.get(m, f"'{m}' has no card") for m in models
            )


def _card_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.name != "lineups.yaml") if folder.is_dir() else []


def builtin_cards_dir() -> Path:
    return Path(str(resources.files("tui.modelcards")))


def user_cards_dir() -> Path:
    return paths.config_dir() / "modelcards"


def load_catalog(folders: list[Path] | None = None) -> Catalog:
    """Cards and lineups from the built-in folder, then the user's (later folders win)."""
    folders = folders if folders is not None else [builtin_cards_dir(), user_cards_dir()]
    catalog = Catalog()
    for folder in folders:
        for path in _card_files(folder):
            data = None
            try:
                data = read_yaml(path)
                card = parse_card(data, str(path))
            except (CardError, YamlFileError) as error:
                catalog.problems.append(f"{path}: {error}")
                named = data.get("id") if isinstance(data, dict) else None
                catalog.unreadable_cards[named if isinstance(named, str) else path.stem] = f"{path}: {error}"
                continue
            catalog.cards[card.id] = card
    for folder in folders:
        lineups = folder / "lineups.yaml"
        if lineups.is_file():
            try:
                _parse_lineups(read_yaml(lineups), str(lineups), catalog)
            except YamlFileError as error:
                catalog.problems.append(f"{lineups}: {error}")
    return catalog


# --- choosing models -------------------------------------------------------------------------


def card_from_gguf(path: Path) -> ModelCard:
    """A card for any GGUF file, from its own metadata (name, size, quantisation, template)."""
    from tui.gguf import read_gguf_info  # only needed for --model PATH

    info = read_gguf_info(path)  # raises GGUFError, a ValueError with a readable message
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-.") or "model"
    return ModelCard(
        id=stem,
        name=info.name or path.stem,
        family=info.family or "unknown",
        params=info.n_params,
        quant=info.quantisation or "?",
        size=info.file_size,
        sha256=None,  # computed when first needed (transcripts record it)
        context=min(info.context_length or 4096, 4096),
        sources=(Source(path=str(path)),),
        chat_format="gguf" if info.chat_template else "chatml",
        instruct=True,
        origin=str(path),
    )


def card_from_record(data: dict[str, Any]) -> ModelCard:
    """A card as a transcript saved it, for showing a saved session's models."""

    def number(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    # A remote model's source, as `Endpoint.describe` wrote it (URL#MODEL), so its pane says where it ran.
    sources = data.get("sources")
    described = sources[0] if isinstance(sources, list) and sources and isinstance(sources[0], str) else ""
    url, _, model = described.rpartition("#")
    remote = (Source(endpoint=Endpoint(url, model)),) if isinstance(data.get("endpoint"), dict) and url else ()
    return ModelCard(
        id=str(data.get("id", "?")),
        name=str(data.get("name", data.get("id", "?"))),
        family=str(data.get("family", "")),
        params=number("params"),
        quant=str(data.get("quant", "?")),
        size=number("size"),
        sha256=data.get("sha256") if isinstance(data.get("sha256"), str) else None,
        context=number("context") or 4096,
        sources=remote,
        instruct=bool(data.get("instruct", True)),
        origin=str(data.get("origin", "")),
    )


class SelectionError(ValueError):
    """The lineup or model the user asked for does not exist."""


def select_models(catalog: Catalog, lineup: str | None, models: list[str]) -> list[ModelCard]:
    """The cards for `--lineup` and `--model` (ids or GGUF paths), smallest first."""
    chosen: dict[str, ModelCard] = {}
    if lineup or not models:
        name = lineup or "offline"
        if name not in catalog.lineups and name in catalog.unusable_lineups:
            raise SelectionError(f"lineup '{name}' has no usable card: {catalog.unusable_lineups[name]}")
        if name not in catalog.lineups:
            known = ", ".join(sorted(catalog.lineups)) or "none"
            raise SelectionError(f"no lineup named '{name}' (known: {known}); see `ladder models list`")
        for card_id in catalog.lineups[name].models:
            chosen[card_id] = catalog.cards[card_id]
    for spec in models:
        if spec in catalog.cards:
            card = catalog.cards[spec]
        elif Path(spec).expanduser().is_file():
            card = card_from_gguf(Path(spec).expanduser().resolve())
            if card.id in catalog.cards or card.id in chosen:  # a file named like a card is still itself
                card = replace(card, id=f"{card.id}-file-{hashlib.sha1(card.origin.encode()).hexdigest()[:6]}")
        elif spec in catalog.unreadable_cards:
            raise SelectionError(
                f"no model card '{spec}': its card file could not be read "
                f"({catalog.unreadable_cards[spec]}); fix it, then see `ladder models list`"
            )
        elif spec.endswith(".gguf"):
            raise SelectionError(f"no such file: {spec}")
        else:
            raise SelectionError(f"no model card '{spec}' and no file by that name; see `ladder models list`")
        chosen[card.id] = card
    return sorted(chosen.values(), key=lambda card: card.order)
