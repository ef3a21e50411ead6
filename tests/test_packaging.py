"""The wheel that `pip install .` builds holds every module and data file the app needs
(the README's app command installs it that way, not in editable mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` installs, built from a clean copy (setuptools would reuse a stale
    build/ folder in the checkout)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
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
    return next(tmp_path.glob("*.whl"))


def test_the_wheel_ships_every_module_card_scenario_stylesheet_and_the_ladder_script(wheel_path: Path) -> None:
    wheel = zipfile.ZipFile(wheel_path)
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


@pytest.mark.model
def test_the_start_up_figure_measures_the_installed_app_when_run_from_the_checkout(
    wheel_path: Path, tmp_path: Path
) -> None:
    """`ladder bench` from the repo root after `pip install .`: its start-up figure runs the app
    in a fresh `python -c`, which puts its working folder first on the path; from the checkout
    that was the source tree's `tui/`, which lacks `tui.modelcards`, and the figure failed."""
    installed = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(installed), str(wheel_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The figure's own process must use the installed package too (in this test's editable venv the
    # checkout would still find tui.modelcards, so that is what is checked).
    where = f"import tui; assert tui.__file__.startswith({str(installed)!r}), 'imported ' + tui.__file__"
    measure = (
        f"{where}\n"
        "from tui.commands.bench_app import LADDER_APP, startup_time\n"
        f"print(startup_time(dict(LADDER_APP, imports=LADDER_APP['imports'] + {chr(10) + where!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", measure],  # -P: this process, too, must not import the checkout
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) > 0
