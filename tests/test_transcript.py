"""Transcripts: one append-only JSON Lines file per session, readable whatever happened to it."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from tui import transcript as transcript_module
from tui.transcript import FORMAT_VERSION, TranscriptError, TranscriptWriter, read_transcript

EVENTS = [
    {"type": "user", "text": "Why is the sky blue? Explain ☀️ 简单地"},
    {"type": "reply", "model": "tiny", "status": "done", "text": "Rayleigh scattering.\n\tIndented."},
    {"type": "settings", "params": {"temperature": 0.2}},
]


def write_session(directory: Path, events: list[dict] = EVENTS) -> Path:
    writer = TranscriptWriter(directory, {"lineup": "offline"})
    for event in events:
        writer.write(event)
    writer.close()
    assert writer.path is not None
    return writer.path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_file_created_on_first_event(tmp_path: Path) -> None:
    """No file until the first event; then one named by date and that event's text, owner-only,
    starting with the session header."""
    directory = tmp_path / "sessions"
    writer = TranscriptWriter(directory, {"lineup": "offline"})
    assert writer.path is None and not directory.exists()
    writer.write({"type": "user", "text": "Hello, World!  How are you today, friend?"})
    assert writer.path is not None and writer.path.parent == directory
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d{6}-hello-world-how-are-you-today\.jsonl", writer.path.name)
    assert stat.S_IMODE(writer.path.stat().st_mode) == 0o600
    header, event = lines_of(writer.path)
    assert (header["type"], header["format"], header["lineup"]) == ("session", FORMAT_VERSION, "offline")
    assert datetime.fromisoformat(header["created"]).tzinfo is not None
    assert event["text"] == "Hello, World!  How are you today, friend?" and "at" in event
    writer.close()


def test_each_event_is_on_disk_at_once(tmp_path: Path) -> None:
    """Every event can be read from the file while the writer is still open."""
    writer = TranscriptWriter(tmp_path, {})
    for count, event in enumerate(EVENTS, start=1):
        writer.write(event)
        assert writer.path is not None
        assert len(lines_of(writer.path)) == 1 + count
    writer.close()


def test_round_trip(tmp_path: Path) -> None:
    """What was written is what is read back, non-ASCII text and control characters included."""
    transcript = read_transcript(write_session(tmp_path))
    assert transcript.problems == []
    assert transcript.header["lineup"] == "offline"
    assert [{k: v for k, v in e.items() if k != "at"} for e in transcript.events] == EVENTS


def test_cut_off_last_line(tmp_path: Path) -> None:
    """A last line cut off while writing is one problem; the events before it are intact."""
    path = write_session(tmp_path)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"type": "reply", "text": "half a rep')
    transcript = read_transcript(path)
    assert len(transcript.events) == len(EVENTS)
    assert transcript.problems == [f"{path.name}: the last line is incomplete (cut off while writing); left out"]


def test_garbage_line_is_skipped(tmp_path: Path) -> None:
    """A line that is not a JSON object is reported by number and skipped."""
    path = write_session(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2:2] = ["\x00\x00garbage\n", "[1, 2]\n"]
    path.write_text("".join(lines), encoding="utf-8")
    transcript = read_transcript(path)
    assert [e["type"] for e in transcript.events] == [e["type"] for e in EVENTS]
    assert transcript.problems == [
        f"{path.name}: line 3 is not a JSON object; left out",
        f"{path.name}: line 4 is not a JSON object; left out",
    ]


def test_unknown_event_type(tmp_path: Path) -> None:
    """An event type this version does not know is reported and left out."""
    path = write_session(tmp_path, [EVENTS[0], {"type": "telepathy", "text": "?"}, EVENTS[1]])
    transcript = read_transcript(path)
    assert [e["type"] for e in transcript.events] == ["user", "reply"]
    assert len(transcript.problems) == 1 and "telepathy" in transcript.problems[0]


def test_newer_format(tmp_path: Path) -> None:
    """A transcript from a newer format is read, with one problem saying so."""
    path = tmp_path / "new.jsonl"
    path.write_text(
        json.dumps({"type": "session", "format": FORMAT_VERSION + 1}) + "\n" + json.dumps(EVENTS[0]) + "\n",
        encoding="utf-8",
    )
    transcript = read_transcript(path)
    assert transcript.events == [EVENTS[0]]
    assert len(transcript.problems) == 1 and f"format {FORMAT_VERSION + 1}" in transcript.problems[0]


def test_no_header(tmp_path: Path) -> None:
    """A file without a session header line is reported; its events are still read."""
    path = tmp_path / "headless.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS), encoding="utf-8")
    transcript = read_transcript(path)
    assert transcript.header == {} and len(transcript.events) == len(EVENTS)
    assert transcript.problems == ["headless.jsonl: no session header line"]


KILLED_WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from tui.transcript import TranscriptWriter

    writer = TranscriptWriter(Path(sys.argv[1]), {})
    for n in range(int(sys.argv[2])):
        writer.write({"type": "user", "text": f"turn {n}"})
    os.kill(os.getpid(), 9)
""")


def test_events_survive_kill_9(tmp_path: Path) -> None:
    """A process killed outright right after writing loses none of its events."""
    count = 25
    directory = tmp_path / "sessions"
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(directory), str(count)], timeout=60)
    assert result.returncode == -9
    [path] = directory.iterdir()
    transcript = read_transcript(path)
    assert transcript.problems == []
    assert [e["text"] for e in transcript.events] == [f"turn {n}" for n in range(count)]


def test_two_writers_in_the_same_second(tmp_path: Path) -> None:
    """Two sessions started in the same second with the same first words get distinct files."""
    for attempt in range(5):  # again if the two writes straddle a second
        directory = tmp_path / f"attempt-{attempt}"
        started = datetime.now().replace(microsecond=0)
        first, second = (write_session(directory, [EVENTS[0]]) for _ in range(2))
        if datetime.now().replace(microsecond=0) == started:
            break
    assert second.name == first.name.replace(".jsonl", "-2.jsonl")
    assert len(lines_of(first)) == len(lines_of(second)) == 2


def test_sessions_folder_is_created_owner_only_and_an_existing_one_is_left_as_it_is(tmp_path: Path) -> None:
    """Transcripts are private: a new sessions folder is 0700 like its 0600 files; a folder the
    user already had keeps its mode."""
    write_session(tmp_path / "new")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    (tmp_path / "shared").mkdir(mode=0o755)
    os.chmod(tmp_path / "shared", 0o755)
    write_session(tmp_path / "shared")
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755


def test_close_syncs_the_file_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ended session is on the disk, not only in the page cache: close() fsyncs the open file."""
    writer = TranscriptWriter(tmp_path, {})
    writer.write(EVENTS[0])
    assert writer._file is not None
    descriptor = writer._file.fileno()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(transcript_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    writer.close()
    assert synced == [descriptor]


def test_a_write_after_close_is_an_error_and_creates_no_file(tmp_path: Path) -> None:
    """A late event for a closed transcript (a reply ending after a new session began) must not
    silently start a new, headless file."""
    writer = TranscriptWriter(tmp_path / "sessions", {"lineup": "offline"})
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(EVENTS[1])
    assert not (tmp_path / "sessions").exists()


class FillingUpFile:
    """The transcript's file on a disk that fills up during the next write: the kernel takes
    part of it, then refuses the rest (ENOSPC), as a real full disk does."""

    def __init__(self, file) -> None:  # type: ignore[no-untyped-def]
        self.file = file
        self.full = True
        self.calls = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        self.calls += 1
        if not self.full:
            return self.file.write(data)
        if self.calls == 1:
            return self.file.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self.file.close()


def test_a_write_that_fails_part_way_is_cut_back_off_and_kept_for_later(tmp_path: Path) -> None:
    """A full disk mid-write: no cut line is left, the error names the file and the reason,
    the event waits in memory and is written, in order, with the next one once space returns."""
    writer = TranscriptWriter(tmp_path, {})
    writer.write(EVENTS[0])
    assert writer.path is not None and writer._file is not None
    before = writer.path.read_bytes()
    writer._file = failing = FillingUpFile(writer._file)
    with pytest.raises(TranscriptError) as raised:
        writer.write(EVENTS[1])
    assert str(raised.value) == f"cannot save to {writer.path}: No space left on device"
    assert failing.calls == 2  # it did write half a line, which was then cut off
    assert writer.path.read_bytes() == before
    assert writer.failure is not None and [e["text"] for e in writer.pending] == [EVENTS[1]["text"]]
    failing.full = False
    writer.write(EVENTS[2])
    assert writer.failure is None and writer.pending == []
    writer.close()
    transcript = read_transcript(writer.path)
    assert transcript.problems == []
    assert [e["type"] for e in transcript.events] == ["user", "reply", "settings"]
