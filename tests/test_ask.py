"""`ladder ask` end to end with the real SmolLM2-135M model, and its output helpers."""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TextIO

import pytest
from test_gguf import GGML_F32, STR, build_gguf
from waiting import wait_for

from tui.cards import card_from_record
from tui.commands.ask import STDIN_LIMIT, LabelledLines, prompt_text, summary_table
from tui.commands.options import UsageError
from tui.commands.output import table
from tui.engine.events import Finished

SMOL = "smollm2-135m-instruct"


def ladder(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`ladder ARGS`, with `stdin` piped in, else no standard input: `ask` reads a piped one, and
    must never wait on the test runner's."""
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )


@pytest.mark.model
def test_ask_streams_prints_a_summary_and_saves_a_transcript(tmp_path: Path) -> None:
    result = ladder(
        "ask",
        "--model",
        SMOL,
        "--max-tokens",
        "16",
        "--seed",
        "5",
        "--temperature",
        "0",
        "--sessions-dir",
        str(tmp_path / "s"),
        "What is two plus two?",
    )
    assert result.returncode == 0, result.stderr
    assert "SmolLM2 135M Instruct │ " in result.stdout
    assert "TTFT" in result.stdout and "tokens/s" in result.stdout and "135M" in result.stdout
    transcript = next((tmp_path / "s").glob("*-what-is-two-plus-two.jsonl"))
    assert f"transcript: {transcript}" in result.stdout
    assert oct(transcript.stat().st_mode & 0o777) == "0o600"
    events = [json.loads(line) for line in transcript.read_text().splitlines()]
    reply = events[-1]
    assert reply["type"] == "reply" and reply["model"] == SMOL and reply["status"] == "done"
    assert reply["params"]["seed"] == 5 and reply["params"]["max_tokens"] == 16
    assert reply["text"] and reply["text"].split()[0] in result.stdout


@pytest.mark.model
def test_ask_json_gives_one_event_per_line(tmp_path: Path) -> None:
    result = ladder("ask", "--json", "--model", SMOL, "--max-tokens", "8", "--sessions-dir", str(tmp_path), "Hi")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events][:2] == ["PromptReady", "FirstToken"]
    assert events[-1]["event"] == "Finished" and events[-1]["model"] == SMOL
    assert "".join(e["text"] for e in events if e["event"] == "TextPiece").strip() == events[-1]["text"]


def test_ask_refuses_a_file_that_is_not_gguf_before_loading_any_model(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all")
    result = ladder("ask", "--model", SMOL, "--model", str(broken), "--max-tokens", "4", "Hi")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()  # no "loading", no traceback
    assert line.startswith("ladder: ") and "not a GGUF file" in line
    assert result.stdout == ""


def test_labelled_lines_neutralise_escape_sequences_and_wrap() -> None:
    out = io.StringIO()
    lines = LabelledLines({"a": "Small", "b": "Larger one"}, out)
    lines.add("a", "hello \x1b]0;pwned\x07 world\x1b[2J\nsecond")
    lines.add("b", "word " * 60)
    lines.end("a")
    lines.end("b")
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "Small      │ hello ␛]0;pwned␇ world␛[2J" in text and "Small      │ second" in text
    assert all(len(line) <= lines.text_width + 13 for line in text.splitlines())


def test_tables_neutralise_escape_sequences_in_every_cell() -> None:
    """Names from GGUF files, finish reasons and check reasons reach the terminal harmless."""
    model = SimpleNamespace(card=card_from_record({"id": "evil", "name": "Evil\x1b]0;pwned\x07", "params": 1000}))
    text = summary_table([(model, Finished("done", "stop\x1b[2J", "hi"))])  # type: ignore[list-item]
    assert "\x1b" not in text and "\x07" not in text
    assert "Evil␛]0;pwned␇" in text and "stop␛[2J" in text
    assert "\x1b" not in table([("a", "b"), ("\x1b[31mred", "\x9b1m")])


@pytest.fixture
def evil_gguf(tmp_path: Path) -> Path:
    """A GGUF file whose metadata name carries escape sequences; llama.cpp cannot load it."""
    path = tmp_path / "evil.gguf"
    kvs = [("general.architecture", STR, "llama"), ("general.name", STR, "Evil\x1b]0;pwned\x07\x1b[2J")]
    path.write_bytes(build_gguf(kvs, [("a.weight", (8, 4), GGML_F32)]))
    return path


@pytest.mark.model
def test_ask_exits_1_when_a_model_fails_to_load_and_the_others_answer(tmp_path: Path, evil_gguf: Path) -> None:
    """A lineup of SmolLM2 and a GGUF file that llama.cpp cannot load: SmolLM2's reply is printed
    and saved, the other model's load error is said, and the exit code says not all answered."""
    result = ladder(
        "ask",
        "--model",
        SMOL,
        "--model",
        str(evil_gguf),
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--sessions-dir",
        str(tmp_path / "s"),
        "Hi",
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert errors[-1] == "ladder: 1 of 2 models answered"
    assert any(line.startswith("ladder: evil: ") for line in errors), errors  # why it did not load
    assert "SmolLM2 135M Instruct │ " in result.stdout
    summary = [
        line.split() for line in result.stdout.splitlines() if line.startswith(("SmolLM2 ", "Evil")) and "│" not in line
    ]  # the table's rows, not the streamed reply
    finish = {row[0]: row[-1] for row in summary}
    assert finish.keys() == {"SmolLM2", "Evil␛]0;pwned␇␛[2J"} and finish["Evil␛]0;pwned␇␛[2J"] == "error"
    assert finish["SmolLM2"] in ("stop", "length")
    [transcript] = (tmp_path / "s").glob("*.jsonl")
    replies = [event for event in map(json.loads, transcript.read_text().splitlines()) if event["type"] == "reply"]
    assert [(reply["model"], reply["status"]) for reply in replies] == [(SMOL, "done")]


def test_ask_prints_a_gguf_name_with_escape_sequences_harmlessly(tmp_path: Path, evil_gguf: Path) -> None:
    """`ask --model FILE`: the name read from the file shows up, made visible, and no escape byte
    reaches stdout or stderr, whatever the load failure says."""
    result = ladder("ask", "--model", str(evil_gguf), "--sessions-dir", str(tmp_path / "s"), "Hi")
    assert result.returncode == 1, result.stderr
    assert "Evil␛]0;pwned␇␛[2J" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# --- the prompt: argument, standard input, or both -----------------------------------------------


def ask_args(prompt: str | None) -> argparse.Namespace:
    return argparse.Namespace(prompt=prompt)


@pytest.fixture
def stdin_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes], None]]:
    """Makes standard input a real file with the given bytes, as `ladder ask < FILE` sees it."""
    opened: list[TextIO] = []

    def redirect(data: bytes) -> None:
        path = tmp_path / f"stdin{len(opened)}"
        path.write_bytes(data)
        opened.append(open(path, encoding="utf-8"))  # noqa: SIM115 - closed after the test
        monkeypatch.setattr(sys, "stdin", opened[-1])

    yield redirect
    for file in opened:
        file.close()


def test_without_piped_stdin_the_prompt_is_the_argument() -> None:
    """Under pytest standard input is no file at all: nothing is read."""
    assert prompt_text(ask_args("hi")) == "hi"
    assert prompt_text(ask_args(None)) is None


def test_stdin_alone_is_the_prompt(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"What is two plus two?\n")
    assert prompt_text(ask_args(None)) == "What is two plus two?"


def test_dash_reads_the_prompt_from_stdin(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"line one\nline two\n\n")
    assert prompt_text(ask_args("-")) == "line one\nline two"


def test_stdin_is_appended_to_the_prompt_after_a_blank_line(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"def f():\n    return 1\n")
    assert prompt_text(ask_args("summarise this")) == "summarise this\n\ndef f():\n    return 1"


def test_stdin_from_a_pipe_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, "héllo ✓\n".encode())
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        assert prompt_text(ask_args(None)) == "héllo ✓"


def test_empty_stdin_leaves_the_prompt_alone(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"")
    assert prompt_text(ask_args("hi")) == "hi"


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_a_prompt_of_only_whitespace_is_refused(prompt: str) -> None:
    with pytest.raises(UsageError, match="the prompt is empty"):
        prompt_text(ask_args(prompt))


def test_dash_with_only_whitespace_on_stdin_is_refused(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b" \n\n")
    with pytest.raises(UsageError, match="the prompt is empty"):
        prompt_text(ask_args("-"))


def test_dash_without_piped_stdin_is_refused() -> None:
    with pytest.raises(UsageError, match="nothing is piped into it"):
        prompt_text(ask_args("-"))


def test_stdin_over_the_limit_is_refused_saying_the_limit(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"a" * (STDIN_LIMIT + 1))
    with pytest.raises(UsageError, match="standard input is longer than the 1 MB a prompt may be"):
        prompt_text(ask_args(None))


def test_stdin_at_the_limit_is_taken(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"a" * STDIN_LIMIT)
    assert prompt_text(ask_args(None)) == "a" * STDIN_LIMIT


def test_stdin_that_is_not_utf8_is_refused(stdin_file: Callable[[bytes], None]) -> None:
    stdin_file(b"caf\xe9\n")
    with pytest.raises(UsageError, match=r"standard input is not valid UTF-8 \(byte 0xe9 at offset 3\)"):
        prompt_text(ask_args(None))


def test_prompt_argument_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(UsageError, match=r"the prompt is not valid UTF-8 \(byte 0xe9 at character 4\)"):
        prompt_text(ask_args("caf\udce9"))


@pytest.mark.model
def test_ask_takes_the_prompt_from_a_pipe_and_appends_it_to_the_argument(tmp_path: Path) -> None:
    """`cat notes | ladder ask "summarise this"`, end to end: the turn saved is the argument, a
    blank line and the piped text."""
    result = ladder(
        "ask",
        "--model",
        SMOL,
        "--max-tokens",
        "4",
        "--sessions-dir",
        str(tmp_path),
        "Summarise this",
        stdin="The cat sat on the mat.\n",
    )
    assert result.returncode == 0, result.stderr
    [transcript] = tmp_path.glob("*.jsonl")
    user = next(json.loads(line) for line in transcript.read_text().splitlines() if '"type": "user"' in line)
    assert user["text"] == "Summarise this\n\nThe cat sat on the mat."


def test_ask_refuses_stdin_that_is_not_utf8_before_writing_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tui.cli", "ask", "--sessions-dir", str(tmp_path / "s")],
        input=b"caf\xe9",
        capture_output=True,
        env=os.environ,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "ladder: standard input is not valid UTF-8 (byte 0xe9 at offset 3); convert it first, e.g. with iconv"
    ]
    assert not (tmp_path / "s").exists()


# --- Ctrl+C ------------------------------------------------------------------------------------


def worker_log(model_id: str) -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "ladder" / "logs" / f"{model_id}.log"


def start_ask(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str], Path]:
    """`ladder ask ARGS` in its own process group, as a terminal runs it; its stdout lines
    arrive in the queue, its stderr goes to a file."""
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "ask", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=os.environ,
            start_new_session=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines, stderr


def interrupt(process: subprocess.Popen[str]) -> int:
    """Ctrl+C as a terminal sends it: SIGINT to the whole process group; returns the exit code."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.model
def test_ctrl_c_cancels_the_reply_saves_it_as_cancelled_and_exits_130(tmp_path: Path) -> None:
    log = worker_log(SMOL)
    log_start = log.stat().st_size if log.exists() else 0
    process, lines, stderr = start_ask(
        tmp_path,
        "--model",
        SMOL,
        "--max-tokens",
        "400",
        "--temperature",
        "0",
        "--seed",
        "1",
        "--sessions-dir",
        str(tmp_path / "s"),
        "Write a long story about a dragon who learns to sail.",
    )
    try:
        while "│" not in lines.get(timeout=120):  # the reply is streaming
            pass
    finally:
        code = interrupt(process)
    errors = stderr.read_text()
    assert code == 130, errors
    assert "Traceback" not in errors
    assert errors.splitlines()[-1] == "ladder: interrupted; replies cut short are saved as cancelled"
    [transcript] = (tmp_path / "s").glob("*.jsonl")
    [reply] = [event for event in map(json.loads, transcript.read_text().splitlines()) if event["type"] == "reply"]
    assert (reply["model"], reply["status"]) == (SMOL, "cancelled")
    assert reply["text"] and reply["completion_tokens"] < 400
    new_log = log.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in new_log and "KeyboardInterrupt" not in new_log


@pytest.mark.model
def test_ctrl_c_while_loading_exits_130_without_a_traceback(tmp_path: Path) -> None:
    log = worker_log(SMOL)
    log_start = log.stat().st_size if log.exists() else 0
    process, _, stderr = start_ask(tmp_path, "--model", SMOL, "--sessions-dir", str(tmp_path / "s"), "Hi")
    try:
        wait_for(lambda: "loading" in stderr.read_text(), timeout=120, what="the models to start loading")
    finally:
        code = interrupt(process)
    errors = stderr.read_text()
    assert code == 130, errors
    assert "Traceback" not in errors
    assert "ladder: interrupted" in errors
    new_log = log.read_bytes()[log_start:].decode(errors="replace") if log.exists() else ""
    assert "Traceback" not in new_log and "KeyboardInterrupt" not in new_log
