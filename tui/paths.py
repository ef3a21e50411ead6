"""Where Ladder keeps its files: config (user cards), cache (assembled models), data (sessions)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

APP = "ladder"


def new_file(folder: Path, stem: str, suffix: str) -> Path:
    """A path in `folder` for a new file named `stem` (`-2`, `-3`… when that name is taken)."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP))


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP))


def sessions_dir(override: str | Path | None = None) -> Path:
    """`--sessions-dir`, else ./sessions when it exists, else the user data folder."""
    if override:
        return Path(override).expanduser()
    local = Path.cwd() / "sessions"
    if local.is_dir():
        return local
    return data_dir() / "sessions"


MIN_FREE_BYTES = 1_000_000  # room for a few sessions; a fuller disk fails on the first turns


class FolderError(Exception):
    """The sessions folder cannot be used; the message says why."""


def check_sessions_folder(folder: Path) -> None:
    """Make sure the sessions folder exists (creating it owner-only), is a folder, takes a new
    file and has some free space; raises FolderError saying what is wrong. Writing a file is the
    only sure test: root ignores permission bits, and a read-only mount shows only on write."""
    try:
        if folder.exists() and not folder.is_dir():
            raise FolderError(f"the sessions folder {folder} is a file, not a folder")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise FolderError(f"cannot create the sessions folder {folder}: {error.strerror or error}") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise FolderError(
            f"the sessions folder {folder} has only {free // 1000} KB free (Ladder wants at least "
            f"{MIN_FREE_BYTES // 1_000_000} MB)"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".ladder-write-check-")
        try:
            os.write(fd, b"ladder")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise FolderError(f"cannot write in the sessions folder {folder}: {error.strerror or error}") from None
