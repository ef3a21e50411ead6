"""Transcripts: one append-only JSON Lines file per session.

The first line is a header (`"type": "session"`); every later line is one event: a user
turn, a finished / cancelled / failed reply, a settings change. Each line is written and
flushed as it happens, so killing the app loses at most the replies in flight and never
damages earlier lines. The format only grows by additions: readers ignore fields they do
not know and report event types they do not know.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

FORMAT_VERSION = 1
EVENT_TYPES = {"session", "user", "reply", "settings", "models", "mark", "note"}


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def slug(text: str, words: int = 6) -> str:
    found = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(found[:words])[:48].strip("-") or "session"


class TranscriptWriter:
    """Creates its file on the first event, named by date and a slug of `name` or of that
    event's text."""

    def __init__(self, directory: Path, header: dict[str, Any], name: str | None = None) -> None:
        self.directory = directory
        self.header = header
        self.name = name  # names the file instead of the first event's text
        self.path: Path | None = None
        self._file: IO[str] | None = None

    def _open(self, name_hint: str) -> IO[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{datetime.now():%Y-%m-%d-%H%M%S}-{slug(name_hint)}"
        for n in range(1, 1000):
            name = stem if n == 1 else f"{stem}-{n}"
            path = self.directory / f"{name}.jsonl"
            try:
                # Owner-only from the start: transcripts can hold private conversations.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            self.path = path
            return os.fdopen(fd, "w", encoding="utf-8")
        raise OSError(f"cannot create a transcript file in {self.directory}")

    @classmethod
    def resume(cls, path: Path, header: dict[str, Any]) -> TranscriptWriter:
        """Append to an existing transcript (its header is already written)."""
        writer = cls(path.parent, header)
        writer.path = path
        writer._file = _open_for_append(path)
        return writer

    def write(self, event: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self._open(self.name or str(event.get("text", "")))
            self._write_line({**self.header, "type": "session", "format": FORMAT_VERSION, "created": now()})
        self._write_line({**event, "at": now()})

    def _write_line(self, data: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Transcript:
    path: Path
    header: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read, one line each

    @property
    def id(self) -> str:
        return self.path.stem


def read_transcript(path: Path) -> Transcript:
    """Everything readable in a transcript; damage is reported in `problems`, never raised."""
    transcript = Transcript(path, header={})
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    except OSError as error:
        transcript.problems.append(f"cannot read {path}: {error.strerror}")
        return transcript
    complete = lines[:-1]  # a file that ends without a newline was cut off while writing
    if lines[-1].strip():
        transcript.problems.append(f"{path.name}: the last line is incomplete (cut off while writing); left out")
    unknown: set[str] = set()
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            transcript.problems.append(f"{path.name}: line {number} is not a JSON object; left out")
            continue
        if data.get("type") == "session":
            if transcript.header:
                transcript.problems.append(f"{path.name}: line {number} is a second session header; left out")
            else:
                transcript.header = data
            continue
        if data.get("type") not in EVENT_TYPES:
            unknown.add(str(data.get("type")))
            continue
        transcript.events.append(data)
    if not transcript.header:
        transcript.problems.append(f"{path.name}: no session header line")
    version = transcript.header.get("format", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        transcript.problems.append(f"{path.name}: written by a newer Ladder (format {version}); "
                                   "parts it added may not be shown")
    if unknown:
        transcript.problems.append(f"{path.name}: unknown event type(s) {', '.join(sorted(unknown))}; left out")
    return transcript


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Add one event to a saved transcript (a mark or a note), flushed at once."""
    with _open_for_append(path) as file:
        file.write(json.dumps({**event, "at": now()}, ensure_ascii=False) + "\n")


def _open_for_append(path: Path) -> IO[str]:
    """Open for appending; a last line cut off mid-write is ended first, so that it
    stays one damaged line instead of swallowing the next event."""
    with path.open("rb") as existing:
        size = existing.seek(0, os.SEEK_END)
        existing.seek(max(size - 1, 0))
        ends_cleanly = size == 0 or existing.read(1) == b"\n"
    file = path.open("a", encoding="utf-8")
    if not ends_cleanly:
        file.write("\n")
    return file
