"""From a card to a file on disk, against real files: fake installed PyPI packages that
importlib.metadata really finds, a real hub protocol (tests/hub_standin.py), real subprocesses."""

from __future__ import annotations

import hashlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hub_standin import HubStandIn

from tui import store
from tui.cards import ModelCard, parse_card
from tui.store import ModelUnavailable

MB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_card(sources: list[dict[str, Any]], card_id: str = "test-model", **fields: Any) -> ModelCard:
    """A card through the real parser, as if read from a YAML file."""
    data = {
        "id": card_id,
        "name": "Test Model",
        "family": "Test",
        "params": 1000,
        "quant": "Q4_0",
        "context": 512,
        "sources": sources,
        **fields,
    }
    return parse_card(data, origin="test")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test here gets its own cache (assembled models, remembered hashes)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "ladder"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site-packages folder on sys.path, for fake installed packages."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def install(site: Path, package: str, files: dict[str, bytes]) -> None:
    """A fake installed distribution: its dist-info metadata and its data files."""
    dist_info = site / f"{package.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    for name, data in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(data)
    importlib.invalidate_caches()


def install_chunks(site: Path, chunks: list[bytes]) -> list[dict[str, str]]:
    """One fake package per chunk; returns the card's `chunks` list."""
    parts = []
    for n, data in enumerate(chunks):
        package = f"fake-model-part{n}"
        install(site, package, {f"fake_model_part{n}/data/part{n:02}.bin": data})
        parts.append({"package": package, "file": f"fake_model_part{n}/data/part{n:02}.bin"})
    return parts


# --- PyPI: one whole file -------------------------------------------------------------------


def test_whole_file_used_in_place(site: Path, own_cache: Path) -> None:
    """A whole model inside a package is returned where it lies; nothing is copied."""
    data = os.urandom(50_000)
    install(site, "fake-whole", {"fake_whole/model.gguf": data})
    card = make_card([{"pypi": {"package": "fake-whole", "file": "fake_whole/model.gguf"}}], size=len(data))
    path = store.ensure_file(card)
    assert path == site / "fake_whole" / "model.gguf"
    assert path.read_bytes() == data
    assert not (own_cache / "models").exists()


def test_whole_file_wrong_size(site: Path) -> None:
    """A whole file of the wrong size is refused, naming the package and how to reinstall it."""
    install(site, "fake-whole", {"fake_whole/model.gguf": b"x" * 1000})
    card = make_card([{"pypi": {"package": "fake-whole", "file": "fake_whole/model.gguf"}}], size=999)
    with pytest.raises(ModelUnavailable, match="pip install --force-reinstall fake-whole"):
        store.ensure_file(card)


def test_missing_package(site: Path) -> None:
    """A package that is not installed is named, with the 'offline' extra as the way to get it."""
    card = make_card(
        [
            {
                "pypi": {
                    "chunks": [{"package": "fake-absent-a", "file": "a/x"}, {"package": "fake-absent-b", "file": "b/y"}]
                }
            }
        ]
    )
    with pytest.raises(ModelUnavailable) as caught:
        store.ensure_file(card)
    message = str(caught.value)
    assert "fake-absent-a, fake-absent-b" in message
    assert "ladder-tui[offline]" in message


# --- PyPI: chunks assembled into the cache ----------------------------------------------------


def test_chunks_assembled_once(site: Path) -> None:
    """Chunks are joined in order into the cache, with progress up to the total, and only once."""
    chunks = [os.urandom(300_000), os.urandom(200_001), os.urandom(100_003)]
    whole = b"".join(chunks)
    card = make_card([{"pypi": {"chunks": install_chunks(site, chunks)}}], size=len(whole), sha256=sha(whole))
    calls: list[tuple[int, int]] = []
    path = store.ensure_file(card, lambda what, done, total: calls.append((done, total)))
    assert path == store.assembled_path(card)
    assert path.read_bytes() == whole
    assert calls[-1] == (len(whole), len(whole))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert os.listdir(path.parent) == [path.name]  # no partial file left
    assert store.file_sha256(path) == sha(whole)  # remembered at assembly

    mtime = path.stat().st_mtime_ns
    calls.clear()
    assert store.ensure_file(card, lambda what, done, total: calls.append((done, total))) == path
    assert path.stat().st_mtime_ns == mtime
    assert calls == []


def test_chunks_checksum_mismatch_leaves_nothing(site: Path) -> None:
    """Chunks that do not hash to the card's sha256 are refused; no file, final or partial, is left."""
    chunks = [os.urandom(10_000), os.urandom(10_000)]
    card = make_card([{"pypi": {"chunks": install_chunks(site, chunks)}}], sha256=sha(b"something else"))
    with pytest.raises(ModelUnavailable, match="pip install --force-reinstall fake-model-part0 fake-model-part1"):
        store.ensure_file(card)
    assert os.listdir(store.assembled_path(card).parent) == []


def test_chunks_wrong_total_size(site: Path) -> None:
    """Chunks adding up to another size than the card's are refused, and nothing is left."""
    chunks = [b"a" * 100, b"b" * 100]
    card = make_card([{"pypi": {"chunks": install_chunks(site, chunks)}}], size=201)
    with pytest.raises(ModelUnavailable, match="add up to 200 bytes, the card says 201"):
        store.ensure_file(card)
    assert os.listdir(store.assembled_path(card).parent) == []


ASSEMBLE_SLOWLY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tui import store
    from tui.cards import load_catalog

    card = load_catalog([Path(sys.argv[1])]).cards["chunky"]

    def progress(what, done, total):
        print(done, flush=True)
        time.sleep(60)  # killed here

    store.ensure_file(card, progress)
""")


def test_killed_assembly_leaves_no_complete_looking_file(site: Path, tmp_path: Path) -> None:
    """An assembly killed mid-way leaves at most its own .partial-<pid>; the next run assembles."""
    chunks = [os.urandom(8 * MB) for _ in range(3)]
    whole = b"".join(chunks)
    parts = install_chunks(site, chunks)
    card = make_card([{"pypi": {"chunks": parts}}], card_id="chunky", size=len(whole), sha256=sha(whole))
    cards = tmp_path / "cards"
    cards.mkdir()
    lines = [
        f"id: chunky\nname: Chunky\nfamily: Test\nparams: 1000\nquant: Q4_0\ncontext: 512\n"
        f"size: {len(whole)}\nsha256: {sha(whole)}\nsources:\n  - pypi:\n      chunks:\n"
    ]
    lines += [f"        - {{package: {p['package']}, file: {p['file']}}}\n" for p in parts]
    (cards / "chunky.yaml").write_text("".join(lines))

    env = {**os.environ, "PYTHONPATH": str(site)}
    child = subprocess.Popen(
        [sys.executable, "-c", ASSEMBLE_SLOWLY, str(cards)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        first = child.stdout.readline()  # the first block is written; the child now sleeps
        assert 0 < int(first) < len(whole)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    target = store.assembled_path(card)
    assert not target.exists()
    assert os.listdir(target.parent) == [f"{target.name}.partial-{child.pid}"]

    assert store.ensure_file(card) == target
    assert target.read_bytes() == whole


# --- checksums -------------------------------------------------------------------------------


def test_verify(site: Path) -> None:
    """verify() says ok for a matching file, refuses a damaged one, and reports the hash when
    the card gives none."""
    data = os.urandom(20_000)
    install(site, "fake-whole", {"fake_whole/model.gguf": data})
    source = [{"pypi": {"package": "fake-whole", "file": "fake_whole/model.gguf"}}]
    path = site / "fake_whole" / "model.gguf"

    assert store.verify(make_card(source, sha256=sha(data))) == f"test-model: ok ({path})"
    with pytest.raises(ModelUnavailable, match="the file is damaged"):
        store.verify(make_card(source, sha256=sha(b"other")))
    line = store.verify(make_card(source))
    assert sha(data) in line and "gives none" in line
    with pytest.raises(ModelUnavailable, match="ladder models fetch test-model"):
        store.verify(make_card([{"path": str(site / "absent.gguf")}]))


def test_verify_rehashes_a_file_changed_in_place(tmp_path: Path) -> None:
    """verify() does not trust the remembered hash: damage that kept size and mtime is found."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"a" * 1000)
    card = make_card([{"path": str(path)}], sha256=sha(b"a" * 1000))
    assert "ok" in store.verify(card)
    stat = path.stat()
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelUnavailable, match="damaged"):
        store.verify(card)


def test_local_file_with_another_sha256_is_refused_before_use(tmp_path: Path) -> None:
    """A `path:` file whose hash is not the card's is refused, naming the file, both hashes and
    what to do; a matching one is used, and its remembered hash spares reading it again."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"a" * 1000)
    with pytest.raises(ModelUnavailable) as caught:
        store.ensure_file(make_card([{"path": str(path)}], sha256=sha(b"other")))
    message = str(caught.value)
    assert str(path) in message and sha(b"a" * 1000) in message and sha(b"other") in message
    assert "correct the sha256 in the card" in message and "ladder models verify test-model" in message

    card = make_card([{"path": str(path)}], sha256=sha(b"a" * 1000))
    assert store.ensure_file(card) == path
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size, mtime put back: only the remembered hash gives the old one
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.ensure_file(card) == path


def test_whole_pypi_file_with_another_sha256_is_refused(site: Path) -> None:
    """A whole file inside a package, of the right size but another hash, is refused with the
    package to reinstall; it does not fall through to the card's other sources."""
    data = os.urandom(20_000)
    install(site, "fake-whole", {"fake_whole/model.gguf": data})
    card = make_card(
        [{"pypi": {"package": "fake-whole", "file": "fake_whole/model.gguf"}}, {"path": "/nowhere.gguf"}],
        size=len(data),
        sha256=sha(b"other"),
    )
    with pytest.raises(ModelUnavailable) as caught:
        store.ensure_file(card)
    message = str(caught.value)
    assert str(site / "fake_whole" / "model.gguf") in message and sha(data) in message and sha(b"other") in message
    assert "pip install --force-reinstall fake-whole" in message
    assert store.ensure_file(replace(card, sha256=sha(data))) == site / "fake_whole" / "model.gguf"


def test_file_sha256_is_remembered(tmp_path: Path) -> None:
    """The hash is remembered against size and mtime: kept while they are, redone when they change."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"a" * 1000)
    assert store.file_sha256(path) == sha(b"a" * 1000)
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size, mtime put back: only a remembered hash gives the old one
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.file_sha256(path) == sha(b"a" * 1000)
    assert store.file_sha256(path, recompute=True) == sha(b"b" * 1000)
    path.write_bytes(b"c" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert store.file_sha256(path) == sha(b"c" * 1000)


def test_file_sha256_from_several_threads(tmp_path: Path) -> None:
    """Models load in threads at once, so hashes are computed and remembered concurrently."""
    files = []
    for n in range(4):
        files.append(tmp_path / f"m{n}.gguf")
        files[-1].write_bytes(bytes([n]) * 1000)
    errors: list[BaseException] = []

    def hash_repeatedly(path: Path) -> None:
        try:
            for _ in range(100):
                assert store.file_sha256(path, recompute=True) == sha(path.read_bytes())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=hash_repeatedly, args=(path,)) for path in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- the hub ---------------------------------------------------------------------------------

REPO = "test-org/tiny-GGUF"


@pytest.fixture
def hub_files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "hub"
    folder.mkdir()
    files = {
        "tiny.gguf": b"GGUF" + os.urandom(2 * MB),
        "split-00001-of-00002.gguf": b"GGUF" + os.urandom(300_000),
        "split-00002-of-00002.gguf": os.urandom(200_000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.fixture
def hub(hub_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    with HubStandIn({(REPO, "main", name): path for name, path in hub_files.items()}) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.endpoint)
        yield standin


def hub_card(*files: str, **fields: Any) -> ModelCard:
    body: dict[str, Any] = {"repo": REPO, "files": list(files)}
    return make_card([{"hub": body}], **fields)


def gets(hub: HubStandIn) -> list[str]:
    return [path for method, path in hub.requests if method == "GET"]


def test_hub_download_then_cache(hub: HubStandIn, hub_files: dict[str, Path]) -> None:
    """A hub file is downloaded once, checked against the card, then found in the cache."""
    data = hub_files["tiny.gguf"].read_bytes()
    card = hub_card("tiny.gguf", size=len(data), sha256=sha(data))
    progress: list[tuple[int, int]] = []
    path = store.ensure_file(card, lambda what, done, total: progress.append((done, total)))
    assert path.read_bytes() == data
    assert path.name == "tiny.gguf"
    assert path.is_relative_to(os.environ["HF_HUB_CACHE"])
    assert hub.requests == [("HEAD", f"/{REPO}/resolve/main/tiny.gguf"), ("GET", f"/{REPO}/resolve/main/tiny.gguf")]
    assert (len(data), len(data)) in progress

    found = store.find_local(card)
    assert found is not None and found[0] == path and found[1].kind == "hub"
    assert store.ensure_file(card) == path
    assert len(hub.requests) == 2  # served from the cache


def test_hub_checksum_mismatch(hub: HubStandIn, hub_files: dict[str, Path]) -> None:
    """A hub file that does not match the card's sha256 is refused, now and on later calls."""
    card = hub_card("tiny.gguf", sha256=sha(b"not this file"))
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match="pin a revision"):
            store.ensure_file(card)
    assert store.find_local(card) is None


def test_hub_size_mismatch(hub: HubStandIn, hub_files: dict[str, Path]) -> None:
    """A hub file of another size than the card's is refused."""
    card = hub_card("tiny.gguf", size=hub_files["tiny.gguf"].stat().st_size + 1)
    with pytest.raises(ModelUnavailable, match="pin a revision"):
        store.ensure_file(card)
    assert store.find_local(card) is None


def test_hub_missing_file(hub: HubStandIn) -> None:
    """A file the repo does not have is reported naming the repo and the file, with what to do."""
    card = hub_card("absent.gguf")
    with pytest.raises(ModelUnavailable) as caught:
        store.ensure_file(card)
    message = str(caught.value)
    assert f"{REPO} (absent.gguf @ main)" in message
    assert "no such file" in message and "fix the card" in message
    assert "Traceback" not in message and "\n" not in message


def test_hub_short_body(hub: HubStandIn) -> None:
    """A download cut short is a ModelUnavailable, not the client's own exception."""
    hub.set_failure("short")
    with pytest.raises(ModelUnavailable, match="download from the Hugging Face hub failed"):
        store.ensure_file(hub_card("tiny.gguf"))
    assert store.find_local(hub_card("tiny.gguf")) is None


def test_hub_split_files(hub: HubStandIn, hub_files: dict[str, Path]) -> None:
    """Every file of a split model is downloaded; the first is the one returned."""
    names = ["split-00001-of-00002.gguf", "split-00002-of-00002.gguf"]
    path = store.ensure_file(hub_card(*names))
    assert path.name == names[0]
    assert path.read_bytes() == hub_files[names[0]].read_bytes()
    assert (path.parent / names[1]).read_bytes() == hub_files[names[1]].read_bytes()
    assert gets(hub) == [f"/{REPO}/resolve/main/{name}" for name in names]


# --- sources in order ------------------------------------------------------------------------


def test_present_local_path_wins_over_hub(hub: HubStandIn, tmp_path: Path) -> None:
    """A local path source that exists is used without asking the hub."""
    local = tmp_path / "mine.gguf"
    local.write_bytes(b"GGUF local")
    card = make_card([{"path": str(local)}, {"hub": {"repo": REPO, "file": "tiny.gguf"}}])
    assert store.ensure_file(card) == local
    assert hub.requests == []


def test_missing_local_path_falls_through(hub: HubStandIn, hub_files: dict[str, Path], tmp_path: Path) -> None:
    """A local path that is not there is skipped for the next source."""
    card = make_card([{"path": str(tmp_path / "absent.gguf")}, {"hub": {"repo": REPO, "file": "tiny.gguf"}}])
    assert store.ensure_file(card).read_bytes() == hub_files["tiny.gguf"].read_bytes()


def test_every_source_failing(hub: HubStandIn, site: Path, tmp_path: Path) -> None:
    """When no source works, the error names the model and gives each source's reason, in order."""
    card = make_card(
        [
            {"path": str(tmp_path / "absent.gguf")},
            {"pypi": {"package": "fake-absent", "file": "fake_absent/m.gguf"}},
            {"hub": {"repo": REPO, "file": "absent.gguf"}},
        ]
    )
    with pytest.raises(ModelUnavailable) as caught:
        store.ensure_file(card)
    message = str(caught.value)
    assert message.startswith("Test Model (test-model) is not available: ")
    reasons = [f"no file at {tmp_path / 'absent.gguf'}", "not installed: fake-absent", f"{REPO} (absent.gguf"]
    positions = [message.find(reason) for reason in reasons]
    assert -1 not in positions and positions == sorted(positions)
