"""The `ladder` command as a user runs it: a real subprocess, with this test's folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui.cards import load_catalog


def ladder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


@pytest.fixture
def not_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "x.gguf"
    path.write_text("just some text, renamed\n")
    return path


BAD_INPUT = {
    "unknown lineup": (["ask", "--lineup", "nope", "hi"], "no lineup named 'nope'"),
    "unknown model": (["ask", "--model", "does-not-exist", "hi"], "no model card 'does-not-exist'"),
    "missing gguf": (["ask", "--model", "/tmp/none.gguf", "hi"], "no such file: /tmp/none.gguf"),
    "bad temperature": (["ask", "--temperature", "-1", "hi"], "temperature must be between 0 and 5"),
    "model-param shape": (["ask", "--model-param", "x", "hi"], "--model-param wants ID:NAME=VALUE"),
    "model-param name": (["ask", "--model-param", "gemma-3-270m:bogus=1", "hi"], "unknown sampling parameter 'bogus'"),
    "not a gguf": (["ask", "--model", "{not_gguf}", "hi"], "not a GGUF file"),
    "fetch unknown": (["models", "fetch", "nope"], "'nope' is neither a model card nor a lineup"),
}


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line(args: list[str], expected: str, not_gguf: Path) -> None:
    """Bad input: exit code 2 and one line on stderr saying what is wrong, no traceback."""
    result = ladder(*(arg.format(not_gguf=not_gguf) for arg in args))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("ladder: ") and expected in line
    assert result.stdout == ""


def test_models_list() -> None:
    """`models list` shows every built-in card and the three lineups."""
    result = ladder("models", "list")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert set(load_catalog().cards) <= rows
    for lineup in ("offline", "smollm2", "qwen2.5"):
        assert f"lineup {lineup}: " in result.stdout
    smollm2 = next(line for line in result.stdout.splitlines() if line.startswith("smollm2-135m-instruct "))
    assert smollm2.split()[-1] == "yes"  # installed with the package, so present


def test_models_verify() -> None:
    """`models verify` hashes the installed SmolLM2 file and finds it matches its card."""
    result = ladder("models", "verify", "smollm2-135m-instruct")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("smollm2-135m-instruct: ok (")


def test_bad_user_card_is_a_warning() -> None:
    """A bad user card is one warning naming the file and field; the command still works."""
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "ladder" / "modelcards"
    folder.mkdir(parents=True)
    card = folder / "mine.yaml"
    card.write_text("id: mine\nname: Mine\nfamily: Mine\nparams: many\nquant: Q4_0\ncontext: 512\n"
                    "sources:\n  - path: /nowhere.gguf\n")
    result = ladder("models", "list")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"ladder: warning: {card}: field 'params' must be a whole number, not 'many'"]
    assert "smollm2-135m-instruct" in result.stdout
