"""Where Ladder keeps its files: config (user cards), cache (assembled models), data (sessions)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP = "ladder"


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
