"""Transcripts: one append-only JSON Lines file per session.

The first line is a header (`"type": "session"`); every later line is one event: a user
turn, a finished / cancelled / failed reply, a settings change. Each line is written and
flushed as it happens, so killing the app loses at most the replies in flight and never
damages earlier lines; a line that cannot be written (a full disk) is cut back off and kept
in memory until it can be (see `TranscriptWriter`). The format only grows by additions:
readers ignore fields they do not know and report event types they do not know.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

FORMAT_VERSION = 1
# Each line's "type"; the format only grows: new types are added here, old readers leave them out.
TRANSCRIPT_EVENT_TYPES = {
    "session",
    "user",
    "reply",
    "settings",
    "models",
    "mark",
    "note",
    "token_probs",
    "vote",
    "guess",
    "reveal",
}


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def slug(text: str, words: int = 6) -> str:
    found = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(found[:words])[:48].strip("-") or "session"


class TranscriptError(Exception):
    """A transcript could not be written; the message names the file (or folder) and the reason."""


class TranscriptWriter:
    """Creates its file on the first event, named by date and a slug of `name` or of that
    event's text.

    An event that cannot be written (a full disk, a read-only or failing drive) raises
    `TranscriptError` and stays in `pending`, with the events after it: each later write
    tries them all again, in order, and `save_elsewhere` writes the session to another
    folder. A write that fails part-way is cut back off the file, so what was saved stays
    whole.
    """

    def __init__(self, directory: Path, header: dict[str, Any], name: str | None = None) -> None:
        self.directory = directory
        self.header = header
        self.name = name  # names the file instead of the first event's text
        self.path: Path | None = None
        self.pending: list[dict[str, Any]] = []  # events not on disk yet, oldest first
        self.failure: TranscriptError | None = None  # why the last attempt to save failed, until one succeeds
        self.closed = False
        self._file: BinaryIO | None = None

    @classmethod
    def resume(cls, path: Path, header: dict[str, Any]) -> TranscriptWriter:
        """Append to an existing transcript (its header is already written); opened at the first event."""
        writer = cls(path.parent, header)
        writer.path = path
        return writer

    @property
    def started(self) -> bool:
        """Whether the header is settled: an event was saved, or is waiting to be."""
        return self.path is not None or bool(self.pending)

    def write(self, event: dict[str, Any]) -> None:
        if self.closed:  # a stray late event must not start a new, headless file
            raise ValueError(f"the transcript {self.path or self.directory} is closed")
        self.pending.append({**event, "at": now()})
        self.save_pending()

    def save_pending(self) -> None:
        """Write the pending events; on failure raise TranscriptError and keep those not written."""
        try:
            if self._file is None and self.pending:
                if self.path is None:
                    self.path, self._file = self._create(self.directory, self._fresh_stem(), self._header_line())
                else:
                    self._file = _open_for_append(self.path)
            while self.pending:
                assert self._file is not None
                _append(self._file, _line(self.pending[0]))
                self.pending.pop(0)
        except OSError as error:
            self.failure = TranscriptError(f"cannot save to {self.path or self.directory}: {error.strerror or error}")
            raise self.failure from error
        self.failure = None

    def save_elsewhere(self, directory: Path) -> Path:
        """Write the whole session (what was saved, then what is pending) to a new file in
        `directory`, and save there from now on; the old file is left as it is."""
        saved = b""
        if self.path is not None and self.path.exists():
            try:
                saved = self.path.read_bytes()
            except OSError as error:
                raise TranscriptError(f"cannot read {self.path} to copy it: {error.strerror}") from error
            saved = saved[: saved.rfind(b"\n") + 1]  # whole lines only
        try:
            path, file = self._create(
                directory, self.path.stem if self.path else self._fresh_stem(), saved or self._header_line()
            )
        except OSError as error:
            raise TranscriptError(f"cannot save to {directory}: {error.strerror or error}") from error
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self.path, self._file, self.directory = path, file, directory
        self.save_pending()
        return path

    def close(self) -> None:
        """Save what is pending, make it durable and close; raises TranscriptError when
        something could not be saved (those events stay in `pending`)."""
        if self.closed:
            return
        self.closed = True
        failure: TranscriptError | None = None
        if self.pending:
            try:
                self.save_pending()
            except TranscriptError as error:
                failure = error
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())  # an ended session is on the disk, not only in its cache
            except OSError as error:
                failure = failure or TranscriptError(f"cannot save to {self.path}: {error.strerror}")
            finally:
                self._file.close()
                self._file = None
        if failure is not None:
            raise failure

    def _fresh_stem(self) -> str:
        hint = self.name or (str(self.pending[0].get("text", "")) if self.pending else "")
        return f"{datetime.now():%Y-%m-%d-%H%M%S}-{slug(hint)}"

    def _header_line(self) -> bytes:
        return _line({**self.header, "type": "session", "format": FORMAT_VERSION, "created": now()})

    @staticmethod
    def _create(directory: Path, stem: str, content: bytes) -> tuple[Path, BinaryIO]:
        """A new file in `directory` named `stem` (numbered if taken) holding `content`; no
        file is left behind if `content` cannot be written."""
        # Owner-only from the start, folder and files: transcripts can hold private conversations.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = directory / f"{stem if n == 1 else f'{stem}-{n}'}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with contextlib.ExitStack() as on_failure:
                file = on_failure.enter_context(open(fd, "ab", buffering=0))
                on_failure.callback(_remove, path)
                _append(file, content)
                on_failure.pop_all()  # written: the file stays open, the caller's now
            return path, file
        raise OSError(errno.EEXIST, f"no free file name for {stem} in {directory}")


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
        if data.get("type") not in TRANSCRIPT_EVENT_TYPES:
            unknown.add(str(data.get("type")))
            continue
        transcript.events.append(data)
    if not transcript.header:
        transcript.problems.append(f"{path.name}: no session header line")
    version = transcript.header.get("format", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        transcript.problems.append(
            f"{path.name}: written by a newer Ladder (format {version}); parts it added may not be shown"
        )
    if unknown:
        transcript.problems.append(f"{path.name}: unknown event type(s) {', '.join(sorted(unknown))}; left out")
    return transcript


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Add one event to a saved transcript (a mark or a note), flushed at once."""
    with _open_for_append(path) as file:
        _append(file, _line({**event, "at": now()}))


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")


def _append(file: BinaryIO, data: bytes) -> None:
    """Append `data` whole or not at all: a write that fails part-way (a full disk) is cut
    back off, so that no half line is left behind."""
    size = os.fstat(file.fileno()).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[file.write(view) or 0 :]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(file.fileno(), size)
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _open_for_append(path: Path) -> BinaryIO:
    """Open for appending, unbuffered; a last line cut off mid-write (by an older version,
    or a crash) is ended first, so that it stays one damaged line instead of swallowing the
    next event."""
    with contextlib.ExitStack() as on_failure:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)  # read too: for its last byte
        file = on_failure.enter_context(open(fd, "ab", buffering=0))
        size = os.fstat(file.fileno()).st_size
        if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
            _append(file, b"\n")
        on_failure.pop_all()  # the file stays open, the caller's now
    return file
