"""`ladder ask` end to end with the real SmolLM2-135M model, and its output helpers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui.ask import LabelledLines

SMOL = "smollm2-135m-instruct"


def ladder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True,
                          env=os.environ, timeout=300)


@pytest.mark.usefixtures("offline_models")
def test_ask_streams_prints_a_summary_and_saves_a_transcript(tmp_path: Path) -> None:
    result = ladder("ask", "--model", SMOL, "--max-tokens", "16", "--seed", "5", "--temperature", "0",
                    "--sessions-dir", str(tmp_path / "s"), "What is two plus two?")
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


@pytest.mark.usefixtures("offline_models")
def test_ask_json_gives_one_event_per_line(tmp_path: Path) -> None:
    result = ladder("ask", "--json", "--model", SMOL, "--max-tokens", "8", "--sessions-dir", str(tmp_path), "Hi")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events][:2] == ["PromptReady", "FirstToken"]
    assert events[-1]["event"] == "Finished" and events[-1]["model"] == SMOL
    assert "".join(e["text"] for e in events if e["event"] == "TextPiece").strip() == events[-1]["text"]


@pytest.mark.usefixtures("offline_models")
def test_ask_exits_non_zero_when_a_model_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all")
    result = ladder("ask", "--model", SMOL, "--model", str(broken), "--max-tokens", "4", "Hi")
    assert result.returncode == 2 and "Traceback" not in result.stderr  # not a GGUF: refused up front


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
