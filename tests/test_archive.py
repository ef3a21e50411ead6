"""The saved-session collection: listing (with its index), search, ids, export files, and
`ladder sessions` as a user runs it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tui import archive, transcript, transcript_search
from tui.history import SessionRecord, load_record
from tui.transcript import TranscriptWriter, append_event

MODELS = [
    {"id": "tiny-135m", "name": "Tiny", "params": 135_000_000},
    {"id": "big-1.5b", "name": "Big", "params": 1_500_000_000},
]
LATE = {"id": "late-360m", "name": "Late", "params": 360_000_000}


def write_session(
    directory: Path,
    prompts: list[str],
    *,
    created: str = "2026-03-01T10:00:00+01:00",
    lineup: str = "offline",
    scenario: str | None = None,
    reply: str = "Reply {n} from {model}.",
    extra: list[dict[str, Any]] | None = None,
    name: str | None = None,
) -> Path:
    """A transcript written by the real writer, created at `created`; every model answers
    every prompt with `reply` (formatted with the turn number and model id)."""
    header = {
        "lineup": lineup,
        "models": MODELS,
        "system": "Be brief.",
        "scenario": {"id": scenario, "title": scenario} if scenario else None,
    }
    with mock.patch.object(transcript, "now", lambda: created):
        writer = TranscriptWriter(directory, header, name=name)
        for n, prompt in enumerate(prompts, start=1):
            writer.write({"type": "user", "turn": n, "text": prompt})
            for card in reversed(MODELS):  # the big model answers first: show must still order by size
                writer.write(
                    {
                        "type": "reply",
                        "turn": n,
                        "model": card["id"],
                        "status": "done",
                        "finish_reason": "stop",
                        "text": reply.format(n=n, model=card["id"]),
                        "completion_tokens": 7,
                        "ttft_s": 0.25,
                        "tokens_per_s": 12.5,
                    }
                )
        for event in extra or []:
            writer.write(event)
        writer.close()
    assert writer.path is not None
    return writer.path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return tmp_path / "index.json"


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """The transcripts the archive parses, in order."""
    reads: list[Path] = []
    real = archive.load_record

    def counting(path: Path) -> SessionRecord:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(archive, "load_record", counting)
    yield reads


# ---------------------------------------------------------------------------- listing


def test_listing_newest_first_with_summaries(folder: Path, index: Path) -> None:
    """Newest first by the header's time, offsets included (not by file name); models added
    mid-session count; examples/ sessions have ids examples/<stem>."""
    older = write_session(folder, ["What movie is this? 🦁"], created="2026-03-02T01:00:00+01:00", name="b")
    newer = write_session(
        folder,
        ["Two", "turns"],
        created="2026-03-01T23:30:00-05:00",
        name="a",
        scenario="emoji",
        extra=[{"type": "models", "added": [LATE], "removed": []}],
    )
    example = write_session(folder / "examples", ["An example"], created="2025-01-01T00:00:00+00:00")
    (folder / "notes.txt").write_text("not a transcript")
    (folder / "dir.jsonl").mkdir()

    summaries = archive.list_sessions(folder, index=index)

    assert [s.id for s in summaries] == [newer.stem, older.stem, f"examples/{example.stem}"]
    top = summaries[0]
    assert (top.path, top.created, top.scenario, top.lineup) == (newer, "2026-03-01T23:30:00-05:00", "emoji", "offline")
    assert top.models == ["tiny-135m", "late-360m", "big-1.5b"]  # smallest first
    assert (top.turns, top.first_prompt, top.problems) == (2, "Two", 0)
    assert (top.size, top.mtime_ns) == (newer.stat().st_size, newer.stat().st_mtime_ns)
    assert summaries[1].scenario is None and summaries[1].first_prompt == "What movie is this? 🦁"


def test_missing_folder_lists_nothing(tmp_path: Path, index: Path) -> None:
    assert archive.list_sessions(tmp_path / "none", index=index) == []


def test_index_reused_and_changed_files_read_again(folder: Path, index: Path, count_reads: list[Path]) -> None:
    """A second listing parses nothing; after one transcript grows, only that one is parsed."""
    paths = [write_session(folder, [f"Prompt {n}"], created=f"2026-03-0{n}T10:00:00+00:00") for n in range(1, 4)]
    first = archive.list_sessions(folder, index=index)
    assert sorted(count_reads) == sorted(paths)

    count_reads.clear()
    assert archive.list_sessions(folder, index=index) == first
    assert count_reads == []

    append_event(paths[0], {"type": "user", "turn": 2, "text": "One more"})
    again = archive.list_sessions(folder, index=index)
    assert count_reads == [paths[0]]
    assert {s.id: s.turns for s in again} == {paths[0].stem: 2, paths[1].stem: 1, paths[2].stem: 1}

    count_reads.clear()
    paths[1].unlink()
    assert [s.id for s in archive.list_sessions(folder, index=index)] == [paths[2].stem, paths[0].stem]
    assert count_reads == []
    assert not any(key.endswith(paths[1].name) for key in json.loads(index.read_text())["sessions"])


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"version": 1, "sessions": []}', '{"version": 99, "sessions": {}}', ""]
)
def test_damaged_index_is_rebuilt(folder: Path, index: Path, count_reads: list[Path], content: str) -> None:
    path = write_session(folder, ["Hello"])
    index.write_text(content)
    assert [s.id for s in archive.list_sessions(folder, index=index)] == [path.stem]
    assert count_reads == [path]
    assert json.loads(index.read_text())["version"] == archive.INDEX_VERSION


def test_wrong_index_entries_are_read_again(folder: Path, index: Path, count_reads: list[Path]) -> None:
    """An entry with the right size and time but wrong-typed fields is not trusted."""
    path = write_session(folder, ["Hello"])
    archive.list_sessions(folder, index=index)
    data = json.loads(index.read_text())
    [entry] = data["sessions"].values()
    entry["turns"] = "many"
    index.write_text(json.dumps(data))
    count_reads.clear()
    assert archive.list_sessions(folder, index=index)[0].turns == 1
    assert count_reads == [path]


def test_index_is_private_and_written_whole(folder: Path, index: Path) -> None:
    """Owner-only (it holds first prompts); listings in parallel threads leave a valid index
    and no temporary files."""
    for n in range(20):
        write_session(folder, [f"Prompt {n}"], name=f"p{n}")
    errors: list[BaseException] = []

    def listing() -> None:
        try:
            assert len(archive.list_sessions(folder, index=index)) == 20
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=listing) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(json.loads(index.read_text())["sessions"]) == 20
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert [p.name for p in index.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_default_index_in_cache_folder(folder: Path) -> None:
    write_session(folder, ["Hello"])
    archive.list_sessions(folder)
    data = json.loads((archive.paths.cache_dir() / archive.INDEX_NAME).read_text())
    assert str((folder / os.listdir(folder)[0]).resolve()) in data["sessions"]


DAMAGED = {  # what read_transcript reports as problems
    "garbage line": '{"type":"session","format":1}\n{"type":"user","turn":1,"text":"hi"}\nnot json\n',
    "cut off": '{"type":"session","format":1}\n{"type":"user","turn":1,"text":"hi"}\n{"type":"reply","tu',
    "no header": '{"type":"user","turn":1,"text":"hi"}\n',
    "empty": "",
    "binary": "\x00\xff\xfe garbage\n",
    "newer format": '{"type":"session","format":99,"created":"not a date"}\n{"type":"hologram"}\n',
}
HI = '{"type":"user","turn":1,"text":"hi"}\n'  # the user turn of each transcript below
WRONG_TYPES = {  # fields of the wrong type, which the read model may trip over
    "turn is a list": '{"type":"session"}\n' + HI + '{"type":"reply","turn":[1],"model":"a"}\n',
    "mark model is a list": '{"type":"session"}\n' + HI + '{"type":"mark","turn":1,"model":[1]}\n',
    "added is a number": '{"type":"session"}\n' + HI + '{"type":"models","added":5}\n',
    "models is a number": '{"type":"session","models":7}\n' + HI,
    "infinite params": '{"type":"session","models":[{"id":"a","params":Infinity}]}\n' + HI,
}


def test_damaged_transcripts_are_listed(folder: Path, index: Path) -> None:
    """Every damaged transcript is listed with its problems counted; nothing raises."""
    folder.mkdir()
    for name, content in {**DAMAGED, **WRONG_TYPES}.items():
        (folder / f"{name.replace(' ', '-')}.jsonl").write_text(content, encoding="utf-8")
    summaries = {s.id: s for s in archive.list_sessions(folder, index=index)}
    assert len(summaries) == len(DAMAGED) + len(WRONG_TYPES)
    for name in DAMAGED:
        assert summaries[name.replace(" ", "-")].problems > 0, name
    for name in WRONG_TYPES:
        summary = summaries[name.replace(" ", "-")]
        assert (summary.turns, summary.first_prompt) == (1, "hi"), name  # what could be read is kept
    assert summaries["newer-format"].created[:4].isdigit()  # an unreadable date: the file's time instead
    for summary in summaries.values():
        load_record(summary.path)  # does not raise either


# ---------------------------------------------------------------------------- search


@pytest.fixture
def corpus(folder: Path) -> dict[str, Path]:
    return {
        "emoji": write_session(
            folder,
            ["What movie do these emoji describe? 🦁👑"],
            created="2026-01-10T09:00:00+01:00",
            scenario="emoji-movies",
            reply="It is The Lion King, {model}.",
        ),
        "shell": write_session(
            folder,
            ["Act as a Linux terminal. pwd"],
            created="2026-02-20T23:59:00+01:00",
            scenario="linux-terminal",
            lineup="smollm2",
            reply='He said "hi" to C:\\temp\\new\n\tthen left.',
        ),
        "plain": write_session(
            folder,
            ["Tell me about Ünïcode", "More?", "And more?", "Still?"],
            created="2026-03-05T00:00:00+01:00",
            reply="Zebras are striped ({n}).",
        ),
    }


def ids(hits: list[archive.SearchHit]) -> list[str]:
    return [hit.summary.id for hit in hits]


def test_search_text_in_replies_and_prompts(corpus: dict[str, Path], folder: Path, index: Path) -> None:
    [hit] = archive.search(folder, "lion KING", index=index)
    assert hit.summary.id == corpus["emoji"].stem
    assert [(s.turn, s.who) for s in hit.snippets] == [(1, "big-1.5b"), (1, "tiny-135m")]  # file order
    assert all("Lion King" in s.text and "\n" not in s.text for s in hit.snippets)
    [hit] = archive.search(folder, "emoji describe", index=index)
    assert [(s.turn, s.who, s.text) for s in hit.snippets] == [(1, "user", "What movie do these emoji describe? 🦁👑")]
    [hit] = archive.search(folder, "zebras", index=index)
    assert len(hit.snippets) == transcript_search.SNIPPETS  # 8 replies say it; the first 3 are shown
    assert ids(archive.search(folder, "ünï", index=index)) == [corpus["plain"].stem]
    assert archive.search(folder, "quokka", index=index) == []


def test_search_terms_that_json_escapes(corpus: dict[str, Path], folder: Path, index: Path) -> None:
    """Quotes, backslashes and newlines are escaped in the file; the search still finds them."""
    for term in ('"hi"', "C:\\temp\\new", 'said "HI" to c:\\TEMP', "new\n\tthen"):
        assert ids(archive.search(folder, term, index=index)) == [corpus["shell"].stem], term


def test_search_other_writers_escapes(folder: Path, index: Path) -> None:
    """A transcript written with ASCII escapes (another tool) or with letters that only
    match ignoring case by Unicode rules (K, the Kelvin sign) is still found."""
    folder.mkdir()
    lines = [
        {"type": "session", "created": "2026-01-01T00:00:00+00:00"},
        {"type": "user", "turn": 1, "text": "Café crème à la carte, a/b"},
        {"type": "reply", "turn": 1, "model": "m", "text": "\u212aelvin is a unit, on the Straße"},
    ]
    (folder / "ascii.jsonl").write_text(
        "".join(json.dumps(line, ensure_ascii=True).replace("/", "\\/") + "\n" for line in lines)
    )
    for term in ("CAFÉ CRÈME", "a/b", "kelvin"):
        assert ids(archive.search(folder, term, index=index)) == ["ascii"], term
    [hit] = archive.search(folder, "STRASSE", index=index)  # Unicode case folding: ß is ss
    assert hit.snippets[0].text == "\u212aelvin is a unit, on the Straße"


def test_search_ignores_keys_and_metadata(corpus: dict[str, Path], folder: Path, index: Path) -> None:
    """Words that are JSON keys, field values or settings in every file are not matches."""
    for term in (
        "turn",
        "reply",
        "model",
        "text",
        "status",
        "done",
        "stop",
        "offline",
        "Be brief",
        "session",
        "12.5",
        '"type"',
        "emoji-movies",
    ):
        assert archive.search(folder, term, index=index) == [], term


def test_search_filters(corpus: dict[str, Path], folder: Path, index: Path) -> None:
    every = [corpus["plain"].stem, corpus["shell"].stem, corpus["emoji"].stem]
    assert ids(archive.search(folder, index=index)) == every
    assert ids(archive.search(folder, model="BIG-1.5", index=index)) == every  # a part of an id, any case
    assert archive.search(folder, model="qwen", index=index) == []
    assert ids(archive.search(folder, scenario="emoji-movies", index=index)) == [corpus["emoji"].stem]
    assert archive.search(folder, scenario="emoji", index=index) == []  # scenario ids match exactly
    assert ids(archive.search(folder, since="2026-02-20", until="2026-03-05", index=index)) == every[:2]  # inclusive
    assert ids(archive.search(folder, until="2026-02-19", index=index)) == [corpus["emoji"].stem]
    assert ids(archive.search(folder, "zebras", since="2026-03-06", index=index)) == []
    emoji = [corpus["emoji"].stem]
    assert ids(archive.search(folder, "lion", scenario="emoji-movies", model="tiny", index=index)) == emoji
    assert ids(archive.search(folder, "lion", scenario="linux-terminal", index=index)) == []


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("yesterday", None, "--since wants a date as YYYY-MM-DD"),
        ("2026-02-30", None, "--since wants a date"),
        (None, "2026-1-1", "--until wants a date"),
        ("2026-03-02", "2026-03-01", "--since 2026-03-02 is after --until 2026-03-01"),
    ],
)
def test_search_bad_dates(folder: Path, index: Path, since: str | None, until: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        archive.search(folder, since=since, until=until, index=index)


# ---------------------------------------------------------------------------- ids


def test_resolve_ids_and_prefixes(folder: Path) -> None:
    a = write_session(folder, ["alpha"], name="alpha one")
    b = write_session(folder, ["alpha"], name="alpha two")
    example = write_session(folder / "examples", ["x"], name="demo")
    stem = a.stem.rsplit("-", 2)[0]  # date and time, shared by both
    assert archive.resolve(folder, a.stem) == a
    assert archive.resolve(folder, a.name) == a  # the file name works too
    assert archive.resolve(folder, f" {a.stem}\n") == a  # as pasted
    assert archive.resolve(folder, a.stem[:-2]) == a  # ...-alpha-o
    assert archive.resolve(folder, f"examples/{example.stem}") == example
    assert archive.resolve(folder, "examples/") == example  # the only example
    with pytest.raises(ValueError, match=r"matches 2 sessions \(.*alpha-one.*alpha-two\); give more of the id"):
        archive.resolve(folder, stem)
    with pytest.raises(ValueError, match=r"no session 'nope' in .*`ladder sessions list` shows the ids"):
        archive.resolve(folder, "nope")
    with pytest.raises(ValueError, match="no session"):
        archive.resolve(folder, example.stem)  # examples are named with their folder
    assert b.exists()


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "/etc/passwd",
        "examples/../../x",
        "a/b",
        "x\x00y",
        "..",
        "examples/..",
        "..\\x",
        "examples/a/b",
        "~/x",
        "./x",
    ],
)
def test_resolve_refuses_paths(folder: Path, tmp_path: Path, bad: str) -> None:
    write_session(folder, ["x"])
    (tmp_path / "x.jsonl").write_text((folder / os.listdir(folder)[0]).read_text())  # a real transcript outside
    with pytest.raises(ValueError, match="not a session id|NUL|no session"):
        archive.resolve(folder, bad)


def test_links_out_of_the_folder_are_refused(folder: Path, tmp_path: Path, index: Path) -> None:
    inside = write_session(folder, ["inside"], name="inside")
    outside = write_session(tmp_path / "elsewhere", ["secret"], name="secret")
    (folder / "sneaky.jsonl").symlink_to(outside)
    (folder / "alias.jsonl").symlink_to(inside)  # a link within the folder is fine
    (folder / "examples").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    assert sorted(s.id for s in archive.list_sessions(folder, index=index)) == sorted([inside.stem, "alias"])
    with pytest.raises(ValueError, match="leads outside the sessions folder"):
        archive.resolve(folder, "sneaky")
    with pytest.raises(ValueError, match="leads outside the sessions folder"):
        archive.resolve(folder, f"examples/{outside.stem}")
    assert archive.resolve(folder, "alias") == folder / "alias.jsonl"
    assert archive.search(folder, "secret", index=index) == []


# ---------------------------------------------------------------------------- output files


def test_safe_output_path(tmp_path: Path) -> None:
    existing = tmp_path / "old.md"
    existing.write_text("keep me")
    assert archive.safe_output_path(str(tmp_path / "new.md")) == tmp_path / "new.md"
    assert archive.safe_output_path(str(existing), force=True) == existing
    for bad, message in [
        (str(tmp_path), "is a folder"),
        (f"{tmp_path}/sub/", "is a folder"),
        (str(existing), "exists; add --force"),
        ("a\x00b", "NUL"),
        ("", "give a file name"),
        (str(tmp_path / "missing" / "x.md"), "does not exist"),
        ("/dev/null", "not a regular file"),
    ]:
        with pytest.raises(ValueError, match=message):
            archive.safe_output_path(bad, force=bad == "/dev/null")
    assert existing.read_text() == "keep me"


def test_write_output(tmp_path: Path) -> None:
    """New files are owner-only; without force a file that appeared since the check is kept;
    with force, a link of that name is replaced, never its target."""
    path = tmp_path / "out.md"
    archive.write_output(path, "one")
    assert path.read_text() == "one" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        archive.write_output(path, "two")
    assert path.read_text() == "one"
    target = tmp_path / "target.md"
    target.write_text("target")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="exists"):
        archive.safe_output_path(str(link))
    archive.write_output(archive.safe_output_path(str(link), force=True), "new", force=True)
    assert target.read_text() == "target" and not link.is_symlink() and link.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------------------- the command


def ladder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui", *args], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )


def test_cli_list(corpus: dict[str, Path], folder: Path) -> None:
    result = ladder("sessions", "list", "--sessions-dir", str(folder))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == ["id", "date", "scenario", "lineup", "turns", "first", "prompt"]
    assert [row.split()[0] for row in rows] == [corpus[k].stem for k in ("plain", "shell", "emoji")]
    assert "2026-01-10 09:00  emoji-movies" in rows[2] and rows[0].split()[5] == "4"
    limited = ladder("sessions", "list", "--limit", "1", "--sessions-dir", str(folder))
    assert limited.stdout.splitlines()[2].startswith(corpus["plain"].stem)
    assert "(2 older not shown; --limit 3 shows all)" in limited.stdout
    empty = ladder("sessions", "list", "--sessions-dir", str(folder / "none"))
    assert empty.returncode == 0 and "no saved sessions" in empty.stdout


def test_cli_list_uses_local_sessions_folder(tmp_path: Path) -> None:
    """Without --sessions-dir: ./sessions when it exists (the tests run in tmp_path/work)."""
    path = write_session(Path.cwd() / "sessions", ["Local one"])
    result = ladder("sessions", "list")
    assert result.returncode == 0 and path.stem in result.stdout


def test_cli_show(folder: Path) -> None:
    marks = [
        {"type": "mark", "turn": 1, "model": "tiny-135m", "best": True},
        {"type": "note", "turn": 1, "model": "tiny-135m", "text": "spot on"},
        {"type": "note", "turn": 1, "text": "an easy one"},
    ]
    path = write_session(
        folder, ["Guess: 🦁👑"], scenario="emoji-movies", reply="The Lion King \x1b[2J ({model})", extra=marks
    )
    lines = path.read_text().splitlines()
    reply = json.loads(lines[2])
    reply["check"] = {"kind": "answer", "passed": True, "reason": "found 'The Lion King'"}
    lines[2] = json.dumps(reply)
    path.write_text("\n".join(lines) + "\nbroken line\n")

    result = ladder("sessions", "show", path.stem[:-3], "--sessions-dir", str(folder))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "␛[2J" in out
    assert out.index("Guess: 🦁👑") < out.index("Tiny [tiny-135m]:") < out.index("Big [big-1.5b]:")  # by size
    assert "stop · 7 tok · TTFT 0.25s · 12.5 t/s · ★ best" in out  # the stats as the pane shows them
    assert "✓ found 'The Lion King'" in out
    assert "note: spot on" in out and "note: an easy one" in out and "scenario emoji-movies" in out
    [problem] = result.stderr.splitlines()
    assert problem.startswith("ladder: warning: ") and "line 8 is not a JSON object" in problem


def test_cli_search(corpus: dict[str, Path], folder: Path) -> None:
    result = ladder("sessions", "search", "lion", "--model", "tiny", "--sessions-dir", str(folder))
    assert result.returncode == 0, result.stderr
    first, *snippets = result.stdout.splitlines()
    assert first.startswith(corpus["emoji"].stem) and "emoji-movies" in first
    assert snippets == [
        "  turn 1, big-1.5b: It is The Lion King, big-1.5b.",
        "  turn 1, tiny-135m: It is The Lion King, tiny-135m.",
    ]
    nothing = ladder("sessions", "search", "quokka", "--sessions-dir", str(folder))
    assert (nothing.returncode, nothing.stdout) == (1, "no sessions match\n")
    filtered = ladder(
        "sessions", "search", "--since", "2026-02-01", "--scenario", "linux-terminal", "--sessions-dir", str(folder)
    )
    assert filtered.stdout.splitlines()[0].startswith(corpus["shell"].stem)


@pytest.mark.parametrize("kind", ["md", "html", "json"])
def test_cli_export(corpus: dict[str, Path], folder: Path, tmp_path: Path, kind: str) -> None:
    session = corpus["emoji"].stem
    out = tmp_path / f"out.{kind}"
    result = ladder("sessions", "export", session, "--format", kind, "-o", str(out), "--sessions-dir", str(folder))
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    if kind == "json":
        assert json.loads(text)["turns"][0]["text"] == "What movie do these emoji describe? 🦁👑"
    else:
        assert "What movie do these emoji describe?" in text and "Lion King" in text
    assert "<html" in text.lower() if kind == "html" else "<html" not in text.lower()

    again = ladder("sessions", "export", session, "--format", kind, "-o", str(out), "--sessions-dir", str(folder))
    assert again.returncode == 2 and again.stderr == f"ladder: {out} exists; add --force to overwrite it\n"
    out.write_text("old")
    forced = ladder(
        "sessions", "export", session, "--format", kind, "-o", str(out), "--force", "--sessions-dir", str(folder)
    )
    assert forced.returncode == 0 and out.read_text(encoding="utf-8") == text

    for to_stdout in ([], ["-o", "-"]):
        stdout = ladder("sessions", "export", session, "--format", kind, *to_stdout, "--sessions-dir", str(folder))
        assert stdout.returncode == 0 and stdout.stdout == text


def test_cli_export_format_from_suffix(corpus: dict[str, Path], folder: Path, tmp_path: Path) -> None:
    result = ladder(
        "sessions", "export", corpus["emoji"].stem, "-o", str(tmp_path / "x.json"), "--sessions-dir", str(folder)
    )
    assert result.returncode == 0, result.stderr
    json.loads((tmp_path / "x.json").read_text())


BAD = {
    "escape": (["show", "../../etc/passwd"], "is not a session id"),
    "absolute": (["export", "/etc/passwd", "--format", "md"], "is not a session id"),
    "unknown id": (["show", "nope"], "`ladder sessions list` shows the ids"),
    "ambiguous": (["show", "2026"], "give more of the id"),
    "bad format": (["export", "2026-01", "--format", "pdf"], "unknown format 'pdf' (known: html, json, md)"),
    "output is a folder": (["export", "2026-01", "-o", "{tmp}"], "is a folder"),
    "bad date": (["search", "--since", "last week"], "--since wants a date as YYYY-MM-DD"),
    "bad limit": (["list", "--limit", "0"], "--limit wants a number"),
}


@pytest.mark.parametrize(("args", "expected"), BAD.values(), ids=BAD.keys())
def test_cli_bad_input_is_one_line(
    corpus: dict[str, Path], folder: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    result = ladder("sessions", *(arg.format(tmp=tmp_path) for arg in args), "--sessions-dir", str(folder))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("ladder: ") and expected in line
    assert result.stdout == ""


def test_a_sessions_folder_that_is_a_symlink_loop_is_refused_in_one_line(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # Python 3.11's resolve() raises RuntimeError here, not OSError
    result = subprocess.run(
        [sys.executable, "-m", "tui", "sessions", "list", "--sessions-dir", str(loop)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"ladder: cannot open the sessions folder {loop}: a symbolic link loop"
