"""The wheel that `pip install .` builds holds every module and data file the app needs
(the README's app command installs it that way, not in editable mode)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_every_module_card_scenario_stylesheet_and_the_ladder_script(tmp_path: Path) -> None:
    # From a clean copy: setuptools would reuse a stale build/ folder in the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", "build", "*.egg-info", "__pycache__", ".git", "sessions", ".pytest_cache"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = zipfile.ZipFile(next(tmp_path.glob("*.whl")))
    names = set(wheel.namelist())
    expected = {
        f"tui/{path.relative_to(ROOT / 'tui')}"
        for path in (ROOT / "tui").rglob("*")
        if path.suffix in (".py", ".tcss", ".yaml") and "__pycache__" not in path.parts
    }
    expected |= {
        f"tui/modelcards/{path.name}" for path in (ROOT / "modelcards").iterdir() if path.suffix in (".py", ".yaml")
    }
    assert expected - names == set()
    [entry_points] = [name for name in names if name.endswith("entry_points.txt")]
    assert "ladder = tui.cli:main" in wheel.read(entry_points).decode()
