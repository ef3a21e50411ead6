"""A lab run's results: one JSON Lines file, a header then one row per item and model, each
appended and flushed to the disk as it is computed. A run killed mid-write leaves at most a torn
last line, which is dropped (and cut off before the next row), so the run resumes from the rows
that are whole.

Line 1: {"type": "lab", "format", "version", "llama_cpp", "created", "tasks", "items", "seed",
"shots", "shots_used", "models", "forms", "params", "titles", "engine"}; then
{"type": "row", ...} per item and model, and {"type": "failed", "model", "error"} for a model
that failed. The format only grows by additions: readers skip record types they do not know.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tui import __version__
from tui.cards import ModelCard
from tui.lab.tasks import SHOTS, LabTask

FORMAT = 1


class LabFileError(ValueError):
    """One line for a person: not a lab file, from a newer format, unreadable or unwritable."""


@dataclass
class LabFile:
    path: Path
    header: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)  # rows read or written so far
    failures: dict[str, str] = field(default_factory=dict)  # model id -> why it failed
    _cut_at: int | None = field(default=None, repr=False)  # where a torn last line begins: cut before appending

    @classmethod
    def create(cls, path: Path, header: dict[str, Any]) -> LabFile:
        """A new file holding `header`; an existing file is never overwritten."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise LabFileError(
                f"{path} already exists; continue it with --resume {path}, or choose another file"
            ) from None
        except OSError as error:
            raise LabFileError(f"cannot create {path}: {error.strerror}") from None
        os.close(fd)
        lab = cls(path, {"type": "lab", "format": FORMAT, **header})
        try:
            lab._write(lab.header)
        except LabFileError:
            path.unlink(missing_ok=True)  # no headerless file left behind
            raise
        return lab

    @classmethod
    def open(cls, path: Path) -> LabFile:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise LabFileError(f"cannot read {path}: {error.strerror}") from None
        whole = data.rfind(b"\n") + 1  # the bytes up to the end of the last whole line
        lines = data[:whole].split(b"\n")[:-1]
        header = _json(lines[0]) if lines else None
        if header is None or header.get("type") != "lab" or not isinstance(header.get("format"), int):
            raise LabFileError(f"{path} is not a lab results file (its first line is not a lab header)")
        if header["format"] > FORMAT:
            raise LabFileError(
                f"{path} was written by a newer Ladder (lab format {header['format']}); update to read it"
            )
        lab = cls(path, header, _cut_at=whole if whole < len(data) else None)
        for number, line in enumerate(lines[1:], start=2):
            record = _json(line)
            if record is None or not _valid(record):
                raise LabFileError(f"{path}: line {number} is not a lab record; the file is damaged")
            lab._take(record)
        return lab

    def done(self) -> set[tuple[str, int, str, str]]:
        """(task, item, variant or "", model) of every row written."""
        return {(row["task"], row["item"], row.get("variant") or "", row["model"]) for row in self.rows}

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, on the disk before this returns."""
        self._write(record)
        self._take(record)

    def _write(self, record: dict[str, Any]) -> None:
        """Append a line whole or not at all: one that fails part-way (a full disk) is cut back off."""
        # A lone surrogate (text cut inside a character) is written as its JSON escape, and reads back as it was.
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", errors="backslashreplace")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise LabFileError(f"cannot write to {self.path}: {error.strerror}") from None
        try:
            if self._cut_at is not None:
                os.ftruncate(fd, self._cut_at)
                self._cut_at = None
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        except OSError as error:
            raise LabFileError(f"cannot write to {self.path}: {error.strerror}") from None
        finally:
            os.close(fd)

    def _take(self, record: dict[str, Any]) -> None:
        if record.get("type") == "row":
            self.rows.append(record)
            self.failures.pop(record["model"], None)  # it runs again (a resumed run)
        elif record.get("type") == "failed":
            self.failures[record["model"]] = str(record.get("error") or "failed")


def _json(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return record if isinstance(record, dict) else None


def _valid(record: dict[str, Any]) -> bool:
    """A record with what readers rely on; types from a later version are kept out by `_take`."""
    if record.get("type") == "row":
        item_ok = isinstance(record.get("item"), int)
        return item_ok and isinstance(record.get("task"), str) and isinstance(record.get("model"), str)
    if record.get("type") == "failed":
        return isinstance(record.get("model"), str)
    return isinstance(record.get("type"), str)


def row_probability(targets_logprobs: list[list[float]], right: int | None) -> tuple[float, bool | None]:
    """(probability, probability_pick) from each target's token log-probabilities.

    Open answer (`right` None): the most likely accepted answer's probability; no pick.
    Multiple choice: the probability mass on the right option among the options, and whether the
    option with the highest mean log-probability per token (length-normalised) is the right one."""
    sums = [math.fsum(logprobs) for logprobs in targets_logprobs]
    if not sums:
        return (0.0, None)
    if right is None:
        return (max(math.exp(total) for total in sums), None)
    top = max(sums)
    if top == -math.inf:
        return (0.0, False)
    mass = math.exp(sums[right] - top) / math.fsum(math.exp(total - top) for total in sums)
    means = [
        total / len(logprobs) if logprobs else -math.inf for total, logprobs in zip(sums, targets_logprobs, strict=True)
    ]
    return (mass, means.index(max(means)) == right)


def lab_header(
    tasks: Sequence[LabTask],
    cards: Sequence[ModelCard],
    forms: dict[str, str],
    items: int,
    seed: int,
    engine_info: dict[str, Any],
) -> dict[str, Any]:
    """What a run was: enough to redraw its report and to resume it with the same items."""
    return {
        "version": __version__,
        "llama_cpp": _llama_cpp_version(),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "tasks": [task.id for task in tasks],
        "items": items,
        "seed": seed,
        "shots": SHOTS,
        "shots_used": {task.id: len(task.shots) for task in tasks},  # fewer where a task has too few items to spare
        "models": [card.header() for card in cards],
        "forms": forms,
        "params": {task.id: task.params().as_dict() for task in tasks},
        "titles": {task.id: task.scenario.title for task in tasks},
        "engine": engine_info,
    }


def _llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"
