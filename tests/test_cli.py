"""The `ladder` command as a user runs it: a real subprocess, with this test's folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tui.cards import load_catalog
from tui.paths import check_sessions_folder


def ladder(*args: str, module: str = "tui") -> subprocess.CompletedProcess[str]:
    """`python -m tui ARGS`, as the `ladder` script runs it. No standard input: `ask` reads a
    piped one, and must never wait on the test runner's."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


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
    "temperature not a number": (
        ["ask", "--temperature", "hot", "hi"],
        "argument --temperature: invalid float value: 'hot'; see `ladder ask --help`",
    ),
    "seed not a number": (["ask", "--seed", "x", "hi"], "argument --seed: invalid int value: 'x'"),
    "unknown schedule": (["ask", "--schedule", "bogus", "hi"], "argument --schedule: invalid choice: 'bogus'"),
    "unknown option": (["ask", "--bogus", "hi"], "unrecognized arguments: --bogus; see `ladder ask --help`"),
    "unknown option of a nested command": (
        ["models", "list", "--all"],
        "unrecognized arguments: --all; see `ladder models list --help`",
    ),
    "unknown command": (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    "missing action": (["models"], "the following arguments are required: ACTION; see `ladder models --help`"),
    "gpu layers below -1": (["ask", "--gpu-layers", "-3", "hi"], "--gpu-layers must be -1 (all layers) or"),
    "empty prompt": (["ask", ""], "the prompt is empty"),
    "whitespace prompt": (["ask", " \n\t "], "the prompt is empty"),
    "dash without stdin": (["ask", "-"], "`ladder ask -` reads the prompt from standard input"),
    "prompt not utf-8": (["ask", "caf\udce9"], "the prompt is not valid UTF-8 (byte 0xe9 at character 4)"),
    "system not utf-8": (["ask", "--system", "\udcff", "hi"], "--system is not valid UTF-8 (byte 0xff at character 1)"),
    "fetch unknown": (["models", "fetch", "nope"], "'nope' is neither a model card nor a lineup"),
    "unknown scenario": (["scenarios", "show", "nope"], "no scenario 'nope' (known: "),
    "sessions limit 0": (["sessions", "list", "--limit", "0"], "--limit wants a number of sessions, 1 or more"),
    "bench too few tokens": (["bench", "--tokens", "2"], "--tokens must be at least 8"),
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


def test_python_m_tui_cli_runs_the_same_command() -> None:
    """`python -m tui.cli` is `ladder` too: its bad input is one line and exit code 2, like the rest."""
    result = ladder("ask", "--ctx", "10", "hi", module="tui.cli")
    assert (result.returncode, result.stdout, result.stderr) == (2, "", "ladder: --ctx must be at least 256 tokens\n")
    version = ladder("--version", module="tui.cli")
    assert version.returncode == 0 and version.stdout == ladder("--version").stdout != ""


@pytest.mark.model
def test_python_m_tui_runs_a_model_to_the_end(tmp_path: Path) -> None:
    """The model workers start by spawning Python afresh, which imports the main module again:
    `python -m tui` must not run `ladder` a second time in them."""
    result = ladder(
        "ask", "--model", "smollm2-135m-instruct", "--max-tokens", "2", "--sessions-dir", str(tmp_path), "Hi"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("SmolLM2 135M Instruct │ ") == 1 and result.stderr == "loading 1 model(s)…\n"


def test_models_list_shows_every_card_and_lineup() -> None:
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


def test_models_verify_finds_the_installed_file_matches_its_card() -> None:
    """`models verify` hashes the installed SmolLM2 file and finds it matches its card."""
    result = ladder("models", "verify", "smollm2-135m-instruct")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("smollm2-135m-instruct: ok (")


def test_bad_user_card_is_a_warning() -> None:
    """A bad user card is one warning naming the file and field; the command still works."""
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "ladder" / "modelcards"
    folder.mkdir(parents=True)
    card = folder / "mine.yaml"
    card.write_text(
        "id: mine\nname: Mine\nfamily: Mine\nparams: many\nquant: Q4_0\ncontext: 512\n"
        "sources:\n  - path: /nowhere.gguf\n"
    )
    result = ladder("models", "list")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"ladder: warning: {card}: field 'params' must be a whole number, not 'many'"]
    assert "smollm2-135m-instruct" in result.stdout


def test_ask_for_a_card_whose_file_is_broken_says_why() -> None:
    """`ask --model ID` and `ask --lineup NAME` for a card that did not load give the reason in one line."""
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "ladder" / "modelcards"
    folder.mkdir(parents=True)
    card = folder / "mine.yaml"
    card.write_text(
        "id: mine\nname: Mine\nfamily: Mine\nparams: many\nquant: Q4_0\ncontext: 512\n"
        "sources:\n  - path: /nowhere.gguf\n"
    )
    (folder / "lineups.yaml").write_text("mine: [mine]\n")
    reason = f"{card}: field 'params' must be a whole number, not 'many'"
    by_id = ladder("ask", "--model", "mine", "hi")
    assert by_id.returncode == 2
    assert by_id.stderr.splitlines() == [
        f"ladder: no model card 'mine': its card file could not be read ({reason}); "
        "fix it, then see `ladder models list`"
    ]
    by_lineup = ladder("ask", "--lineup", "mine", "hi")
    assert by_lineup.returncode == 2
    assert by_lineup.stderr.splitlines() == [f"ladder: lineup 'mine' has no usable card: {reason}"]


def test_text_that_is_not_utf8_leaves_no_files_behind(tmp_path: Path) -> None:
    """A prompt or system prompt with bytes that are not UTF-8 is refused before any file is written."""
    sessions = tmp_path / "s"
    for args in (["caf\udce9"], ["--system", "\udcff", "hi"]):
        result = ladder("ask", "--sessions-dir", str(sessions), *args)
        assert result.returncode == 2 and "not valid UTF-8" in result.stderr
    assert not sessions.exists()
    assert not (tmp_path / "data").exists()  # no scenario progress either


# --- the sessions folder, checked before any model loads ---------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small tmpfs file systems (options as for `mount -o`), unmounted afterwards;
    skips the test where mounting is not permitted (it needs root or CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mount{len(mounted)}"
        where.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here (needs root): {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], check=True)


def refused_sessions_dir(folder: Path, command: str = "ask") -> str:
    """Runs `command` with `folder` as the sessions folder; returns its one error line after
    checking it was refused up front: exit 2, nothing loaded, nothing on stdout."""
    args = [command, "--model", "smollm2-135m-instruct", "--sessions-dir", str(folder)]
    result = ladder(*args, "hi") if command == "ask" else ladder(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()  # no "loading", no traceback
    assert line.startswith("ladder: ") and line.endswith("; choose another with --sessions-dir")
    return line


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_sessions_dir_that_is_a_file_is_refused_up_front(tmp_path: Path, command: str) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    line = refused_sessions_dir(file, command)
    assert line.startswith(f"ladder: the sessions folder {file} is a file, not a folder")
    assert file.read_text() == "mine\n"


def test_sessions_dir_inside_a_file_is_refused_up_front(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    line = refused_sessions_dir(file / "sessions")
    assert line.startswith(f"ladder: cannot create the sessions folder {file / 'sessions'}: Not a directory")


def test_sessions_dir_on_a_read_only_file_system_is_refused_up_front(tmpfs: Callable[[str], Path]) -> None:
    folder = tmpfs("ro,size=4m")
    line = refused_sessions_dir(folder)
    assert line.startswith(f"ladder: cannot write in the sessions folder {folder}: Read-only file system")


def test_sessions_dir_on_a_full_file_system_is_refused_up_front(tmpfs: Callable[[str], Path]) -> None:
    folder = tmpfs("size=256k")
    with open(folder / "filler", "wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
        while True:
            filler.write(b"x" * 4096)
    line = refused_sessions_dir(folder)
    assert line.startswith(f"ladder: the sessions folder {folder} has only 0 KB free (Ladder wants at least 1 MB)")
    assert [path.name for path in folder.iterdir()] == ["filler"]


def test_missing_sessions_dir_is_created_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "sessions"
    check_sessions_folder(folder)
    assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"
    assert list(folder.iterdir()) == []  # the write check cleans up after itself


def test_a_remote_card_is_listed_as_remote_fetched_never_and_left_out_of_the_bench(isolated: Path) -> None:
    cards = isolated / "config" / "ladder" / "modelcards"
    cards.mkdir(parents=True)
    (cards / "box.yaml").write_text(
        "id: box\nname: Box\nsources:\n  - endpoint: {url: 'http://127.0.0.1:9/v1', model: m}\n"
    )
    listed = ladder("models", "list")
    assert listed.returncode == 0
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("box ")]
    assert row.split()[-1] == "remote" and "endpoint: http://127.0.0.1:9/v1#m" in row
    fetched = ladder("models", "fetch", "box")
    assert fetched.returncode == 1 and "runs on the server at 127.0.0.1:9: there is no file to fetch" in fetched.stderr
    bench = ladder("bench", "--model", "box", "--quick")
    assert bench.returncode == 2 and "Traceback" not in bench.stderr
    assert bench.stderr.strip() == (
        "ladder: bench measures local models only; box runs on a server: leave it out of --model and --lineup"
    )
