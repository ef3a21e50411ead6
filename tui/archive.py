"""The saved-session collection: list, search and find transcripts in a sessions folder.

A session's id is its file name without `.jsonl`; curated examples in the `examples/`
subfolder have ids `examples/<stem>`. Listing reads a transcript only when it is new or
has changed since the last listing: an index in the cache folder keeps each file's
summary with its size and modification time. Transcripts only grow, so a changed file
always shows a changed size. The index is only a cache: a missing or damaged one costs
time, never correctness. Searching filters the listing, then reads the transcripts left
(`tui.transcript_search` finds the term in each).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tui import paths
from tui.history import load_record
from tui.transcript_search import Snippet, Term

EXAMPLES = "examples"
INDEX_NAME = "sessions-index.json"
INDEX_VERSION = 1
PROMPT_CHARS = 200  # the first prompt is kept this long in summaries (and the index)


@dataclass
class SessionSummary:
    id: str  # the file stem, or examples/<stem>
    path: Path
    created: str  # ISO date and time from the header, else the file's modification time
    scenario: str | None
    lineup: str | None
    models: list[str]  # model ids, smallest first, including models added mid-session
    turns: int  # user turns
    first_prompt: str  # cut to PROMPT_CHARS
    problems: int  # lines or parts that could not be read
    size: int
    mtime_ns: int

    @property
    def created_at(self) -> datetime:
        return _parse_time(self.created) or datetime.fromtimestamp(self.mtime_ns / 1e9).astimezone()


@dataclass
class SearchHit:
    summary: SessionSummary
    snippets: list[Snippet] = field(default_factory=list)  # the first few matches, in file order


# ---------------------------------------------------------------------------- reading


def _summarise(session_id: str, path: Path, info: os.stat_result) -> SessionSummary:
    record = load_record(path)
    created = record.created if _parse_time(record.created) else _mtime_iso(info.st_mtime_ns)
    lineup = record.header.get("lineup")
    return SessionSummary(
        id=session_id,
        path=path,
        created=created,
        scenario=_text_or_none(record.scenario_id),
        lineup=_text_or_none(lineup),
        models=[str(card.get("id")) for card in record.models],
        turns=len(record.turns),
        first_prompt=record.turns[0].text[:PROMPT_CHARS] if record.turns else "",
        problems=len(record.problems),
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _mtime_iso(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9).astimezone().isoformat(timespec="seconds")


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text) if text else None
    except ValueError:
        return None
    # Naive times are taken as local, so that they sort with the rest.
    return moment if moment is None or moment.tzinfo else moment.astimezone()


# ---------------------------------------------------------------------------- the folder


@dataclass
class _Entry:
    id: str
    path: Path  # as found in the sessions folder
    key: str  # the resolved path: the index key
    info: os.stat_result


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _scan(directory: Path, *, keep_outside: bool = False) -> list[_Entry]:
    """Every `*.jsonl` file in the folder and in its examples/ subfolder. Links that lead
    out of the folder are left out (or kept, for `resolve` to refuse them by name)."""
    try:
        base = directory.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop (Python 3.11 raises RuntimeError for one)
        why = error.strerror if isinstance(error, OSError) and error.strerror else "a symbolic link loop"
        raise ValueError(f"cannot open the sessions folder {directory}: {why}") from None
    found: list[_Entry] = []
    for folder, prefix in ((directory, ""), (directory / EXAMPLES, f"{EXAMPLES}/")):
        try:
            real_folder = folder.resolve()
        except (OSError, RuntimeError):  # examples/ a symlink loop: left out
            continue
        folder_inside = _inside(real_folder, base)
        if not folder_inside and not keep_outside:
            continue
        try:
            with os.scandir(folder) as entries:
                listed = [e for e in entries if e.name.endswith(".jsonl") and not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            raise ValueError(f"cannot read the sessions folder {folder}: {error.strerror}") from None
        for entry in listed:
            try:
                info = entry.stat()  # follows links: a link to a transcript lists that transcript
            except OSError:
                continue  # a dangling link, or removed since the scan
            if not stat.S_ISREG(info.st_mode):
                continue
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                inside = _inside(Path(real), base)
            else:  # plain strings: this loop runs for every transcript on every listing
                real, inside = f"{real_folder}{os.sep}{entry.name}", folder_inside
            if inside or keep_outside:
                found.append(_Entry(prefix + entry.name[: -len(".jsonl")], Path(entry.path), real, info))
    return found


def list_sessions(directory: Path, *, index: Path | None = None) -> list[SessionSummary]:
    """Every session in the folder, newest first. Reads only transcripts that are new or
    changed since the last listing (see the module docstring); `index` is the cache file
    (default: sessions-index.json in the cache folder)."""
    index_path = index or paths.cache_dir() / INDEX_NAME
    cached = _load_index(index_path)
    summaries: list[SessionSummary] = []
    changed = False
    seen: set[str] = set()
    for entry in _scan(directory):
        seen.add(entry.key)
        summary = _from_index(cached.get(entry.key), entry)
        if summary is None:
            summary = _summarise(entry.id, entry.path, entry.info)
            cached[entry.key] = _to_index(summary)
            changed = True
        summaries.append(summary)
    # Forget transcripts that are gone from the folders just listed (strings: Paths are slow here).
    folders = {os.path.dirname(key) for key in seen} | _folders(directory)
    gone = [key for key in cached if key not in seen and os.path.dirname(key) in folders]
    for key in gone:
        del cached[key]
    if changed or gone:
        _save_index(index_path, cached)
    summaries.sort(key=lambda s: (s.created_at.timestamp(), s.id), reverse=True)
    return summaries


def _folders(directory: Path) -> set[str]:
    try:
        return {str(directory.resolve()), str((directory / EXAMPLES).resolve())}
    except (OSError, RuntimeError):  # a symlink loop
        return set()


_FIELDS = ("created", "scenario", "lineup", "models", "turns", "first_prompt", "problems")


def _to_index(summary: SessionSummary) -> dict[str, Any]:
    data = asdict(summary)
    return {"size": summary.size, "mtime_ns": summary.mtime_ns, **{name: data[name] for name in _FIELDS}}


def _from_index(data: Any, entry: _Entry) -> SessionSummary | None:
    """The cached summary if it is for this very version of the file (and well formed)."""
    info = entry.info
    if not isinstance(data, dict) or data.get("size") != info.st_size or data.get("mtime_ns") != info.st_mtime_ns:
        return None
    try:
        summary = SessionSummary(
            id=entry.id,
            path=entry.path,
            size=entry.info.st_size,
            mtime_ns=entry.info.st_mtime_ns,
            **{name: data[name] for name in _FIELDS},
        )
    except (KeyError, TypeError):
        return None
    well_formed = (
        isinstance(summary.created, str)
        and isinstance(summary.scenario, (str, type(None)))
        and isinstance(summary.lineup, (str, type(None)))
        and isinstance(summary.models, list)
        and all(isinstance(m, str) for m in summary.models)
        and isinstance(summary.turns, int)
        and isinstance(summary.first_prompt, str)
        and isinstance(summary.problems, int)
    )
    return summary if well_formed else None


def _load_index(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: every transcript is read again, and the index rewritten
    sessions = data.get("sessions") if isinstance(data, dict) and data.get("version") == INDEX_VERSION else None
    return sessions if isinstance(sessions, dict) else {}


def _save_index(path: Path, sessions: dict[str, Any]) -> None:
    """Written whole to a temporary file and renamed over the index, so a reader never
    sees half an index; the temporary name is unique, so concurrent listings do not mix."""
    # Drop the entries of folders that no longer exist (e.g. removed test or temp folders).
    live = {folder: os.path.isdir(folder) for folder in {os.path.dirname(key) for key in sessions}}
    sessions = {key: value for key, value in sessions.items() if live[os.path.dirname(key)]}
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only (mkstemp's mode): the index holds first prompts of private conversations.
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"version": INDEX_VERSION, "sessions": sessions}, file, ensure_ascii=False, separators=(",", ":"))
        os.replace(temp, path)
    except OSError:
        # Only a cache: the next listing reads the transcripts again.
        if temp is not None:
            Path(temp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- search


def parse_day(text: str | date | None, option: str = "date") -> date | None:
    if text is None or isinstance(text, date):
        return text
    if re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"{option} wants a date as YYYY-MM-DD, e.g. 2026-11-28, not {text!r}")


def search(
    directory: Path,
    text: str | None = None,
    *,
    model: str | None = None,
    scenario: str | None = None,
    since: str | date | None = None,
    until: str | date | None = None,
    index: Path | None = None,
) -> list[SearchHit]:
    """Sessions whose user turns or replies contain `text` (ignoring case), newest first,
    among those with a model whose id contains `model`, scenario `scenario`, created from
    `since` to `until` (dates, both included)."""
    first, last = parse_day(since, "--since"), parse_day(until, "--until")
    if first and last and first > last:
        raise ValueError(f"--since {first} is after --until {last}; nothing can match")
    wanted = model.casefold() if model else None
    candidates = [
        summary
        for summary in list_sessions(directory, index=index)
        if (wanted is None or any(wanted in m.casefold() for m in summary.models))
        and (scenario is None or summary.scenario == scenario)
        and (first is None or summary.created_at.date() >= first)
        and (last is None or summary.created_at.date() <= last)
    ]
    if not text:
        return [SearchHit(summary) for summary in candidates]
    term = Term(text)
    return [SearchHit(summary, snippets) for summary in candidates if (snippets := term.find(summary.path))]


# ---------------------------------------------------------------------------- ids and output files


def resolve(directory: Path, session_id: str) -> Path:
    """The transcript of a session id (or of a unique prefix of one) in `directory`.

    Ids are names, never paths: anything that could reach outside the folder is refused.
    """
    text = session_id.strip().removesuffix(".jsonl")  # pasted ids often carry a space or newline
    name = text.removeprefix(f"{EXAMPLES}/")
    if not text:
        raise ValueError("give a session id; `ladder sessions list` shows them")
    if "\x00" in text:
        raise ValueError("a session id cannot contain a NUL character")
    if os.path.isabs(text) or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(
            f"{session_id!r} is not a session id: ids are names like 2026-11-28-101503-what-movie "
            f"(or {EXAMPLES}/NAME), not paths; `ladder sessions list` shows them"
        )
    entries = _scan(directory, keep_outside=True)
    exact = [entry for entry in entries if entry.id == text]
    matching = exact or [entry for entry in entries if entry.id.startswith(text)]
    if not matching:
        raise ValueError(f"no session {session_id!r} in {directory}; `ladder sessions list` shows the ids")
    if len(matching) > 1:
        ids = sorted(entry.id for entry in matching)
        shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
        raise ValueError(f"{session_id!r} matches {len(ids)} sessions ({shown}); give more of the id")
    entry = matching[0]
    if not _inside(Path(entry.key), directory.resolve()):
        raise ValueError(
            f"{entry.path} leads outside the sessions folder {directory} (a link to {entry.key}); "
            "refusing to read it. Copy the transcript into the folder instead"
        )
    return entry.path


def safe_output_path(path_text: str, *, force: bool = False) -> Path:
    """The file `export -o` may write: a new file in an existing folder, or an existing
    regular file with `force`. Checked before the export is made, so mistakes cost nothing."""
    if not path_text:
        raise ValueError("give a file name to write to")
    if "\x00" in path_text:
        raise ValueError("a file name cannot contain a NUL character")
    path = Path(path_text).expanduser()
    if path_text.endswith(("/", os.sep)) or path.is_dir():
        raise ValueError(f"{path_text} is a folder; give a file name, e.g. {path / 'session.md'}")
    if not path.parent.is_dir():
        raise ValueError(f"the folder {path.parent} does not exist; create it first or choose another")
    if path.is_symlink() or path.exists():
        if not path.is_symlink() and not path.is_file():
            raise ValueError(f"{path_text} exists and is not a regular file; give another file name")
        if not force:
            raise ValueError(f"{path_text} exists; add --force to overwrite it")
    return path


def write_output(path: Path, text: str, *, force: bool = False) -> None:
    """Write `text` to `path` owner-only (exports hold private conversations). Without
    `force` an existing file is never touched, even one created since the check; with it,
    the file (or a link of that name, never the link's target) is replaced whole."""
    data = text.encode("utf-8")
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
