"""Exports of a saved session: Markdown for a Git forge, one self-contained HTML page, and
one JSON document. Built from real transcripts (written with TranscriptWriter, marked and
noted with append_event); no models needed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from tui.export import EXPORTERS, SUFFIXES, to_html, to_json, to_markdown
from tui.history import load_record
from tui.transcript import TranscriptWriter, append_event, read_transcript

CARDS = [  # saved out of order: exports show them smallest first, as history sorts them
    {
        "id": "qwen-1.5b",
        "name": "Qwen2.5 Coder 1.5B",
        "family": "Qwen2.5 Coder",
        "params": 1_543_714_304,
        "quant": "Q4_K_M",
        "size": 1_117_320_544,
        "sha256": "a" * 64,
    },
    {
        "id": "smol-135m",
        "name": "SmolLM2 135M",
        "family": "SmolLM2",
        "params": 134_515_008,
        "quant": "Q4_1",
        "size": 98_362_432,
        "sha256": "0123456789abcdef" * 4,
    },
    {
        "id": "gemma-270m",
        "name": "Gemma 3 270M",
        "family": "Gemma 3",
        "params": 268_098_176,
        "quant": "Q4_K_M",
        "size": 253_114_048,
        "sha256": None,
    },
]
HEADER = {
    "app": "ladder 0.1.0",
    "lineup": "offline",
    "models": CARDS,
    "params": {"temperature": 0.7, "top_k": 40, "seed": 7},
    "model_params": {"gemma-270m": {"temperature": 0.2}},
    "system": "Be brief.\nAnswer in English.",
    "scenario": {
        "id": "emoji-movies",
        "title": "Emoji movies",
        "check": "answer",
        "description": "Guess the film from emoji.",
    },
    "replay_of": "2026-11-28-101503-what-movie",
}
PASSED = {"kind": "answer", "passed": True, "reason": "says Finding Nemo"}
FAILED = {"kind": "answer", "passed": False, "reason": "expected Finding Nemo"}
HOSTILE = "Sure!\n# Heading from the model\n```python\nprint('<script>alert(1)</script>')\n</div>"


def reply(turn: int, model: str, text: str, status: str = "done", **extra: Any) -> dict[str, Any]:
    return {
        "type": "reply",
        "turn": turn,
        "model": model,
        "status": status,
        "finish_reason": {"done": "stop"}.get(status, status),
        "text": text,
        "error": "worker crashed" if status == "error" else None,
        "prompt_tokens": 20,
        "cached_tokens": 0,
        "completion_tokens": 12,
        "ttft_s": 0.33,
        "tokens_per_s": 10.7,
        "elapsed_s": 1.5,
        "params": {"temperature": 0.7, "seed": 7},
        "notices": [],
        **extra,
    }


EVENTS = [
    {
        "type": "user",
        "turn": 1,
        "text": "What movie? 🐠🐟\nOne line more.",
        "item": {"prompt": "What movie? 🐠🐟", "answer": "Finding Nemo", "index": 1},
    },
    reply(1, "qwen-1.5b", "It is **Finding Nemo**.", check=PASSED),
    reply(1, "smol-135m", "The Matrix", check=FAILED),
    reply(1, "gemma-270m", "Describe how", status="cancelled"),
    {"type": "user", "turn": 2, "text": "Now <b>bold</b> & say hi"},
    reply(2, "smol-135m", HOSTILE),
    reply(2, "gemma-270m", "", status="error"),
    reply(2, "qwen-1.5b", "Hi \x1b[2J there"),
    {"type": "user", "turn": 3, "text": "Last one"},
    reply(3, "qwen-1.5b", "Done."),
]


def write(directory: Path, events: list[dict[str, Any]] = EVENTS, header: dict[str, Any] = HEADER) -> Path:
    writer = TranscriptWriter(directory, header)
    for event in events:
        writer.write(event)
    writer.close()
    assert writer.path is not None
    append_event(writer.path, {"type": "mark", "turn": 1, "model": "qwen-1.5b", "best": True})
    append_event(writer.path, {"type": "note", "turn": 1, "model": "smol-135m", "text": "wrong film"})
    append_event(writer.path, {"type": "note", "turn": 2, "text": "a hostile reply"})
    return writer.path


def headings(markdown: str, *tags: str) -> list[str]:
    """The headings a CommonMark renderer sees (GitHub's Markdown is CommonMark based)."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    return [
        tokens[n + 1].content for n, token in enumerate(tokens) if token.type == "heading_open" and token.tag in tags
    ]


def html_blocks(markdown: str) -> list[str]:
    return [token.content for token in MarkdownIt("commonmark").parse(markdown) if token.type == "html_block"]


def saved_replies(path: Path) -> dict[tuple[int, str], dict[str, Any]]:
    return {(e["turn"], e["model"]): e for e in read_transcript(path).events if e["type"] == "reply"}


def test_markdown_header_and_turns(tmp_path: Path) -> None:
    """Title, lineup table smallest first, system prompt, sampling, scenario; each turn with
    the user's text quoted, the expected answer, and replies in size order with their stats."""
    md = to_markdown(load_record(write(tmp_path)))
    assert md.startswith("# Emoji movies · 20")
    rows = [line for line in md.splitlines() if re.search(r" [MG]B \| ", line)]
    assert rows == [
        "| SmolLM2 135M | SmolLM2 | 135M | Q4\\_1 | 98 MB | 0123456789ab |",
        "| Gemma 3 270M | Gemma 3 | 268M | Q4\\_K\\_M | 253 MB |  |",
        "| Qwen2.5 Coder 1.5B | Qwen2.5 Coder | 1.5B | Q4\\_K\\_M | 1.12 GB | aaaaaaaaaaaa |",
    ]
    assert "> Be brief.\n> Answer in English." in md
    assert "**Sampling:** temperature 0.7 · top\\_k 40 · seed 7" in md
    assert "**Sampling for Gemma 3 270M:** temperature 0.2" in md
    assert "**Scenario:** Emoji movies (emoji-movies) · check: answer" in md and "Guess the film from emoji." in md
    assert "**Replay of:** 2026-11-28-101503-what-movie" in md
    assert re.findall(r"^## .*", md, re.M) == ["## Turn 1", "## Turn 2", "## Turn 3", "## Scores"]
    turn1 = md.split("## Turn 1")[1].split("## Turn 2")[0]
    assert "> What movie? 🐠🐟\n> One line more." in turn1 and "**Expected:** Finding Nemo" in turn1
    assert re.findall(r"^### .*", turn1, re.M) == [
        "### SmolLM2 135M (135M)",
        "### Gemma 3 270M (268M)",
        "### Qwen2.5 Coder 1.5B (1.5B)",
    ]
    assert "*stop · 12 tok · TTFT 0.33s · 10.7 t/s · ✓ says Finding Nemo · ★ best*" in turn1
    assert "*stop · 12 tok · TTFT 0.33s · 10.7 t/s · ✗ expected Finding Nemo*" in turn1
    assert "*cancelled · 12 tok" in turn1 and "📝 wrong film" in turn1
    turn2 = md.split("## Turn 2")[1].split("## Turn 3")[0]
    assert "error · 12 tok · TTFT 0.33s · 10.7 t/s · worker crashed" in turn2 and "(no text)" in turn2
    assert "📝 a hostile reply" in turn2 and "Hi ␛[2J there" in turn2 and "\x1b" not in md
    assert "| SmolLM2 135M | 0 | 1 |" in md and "| Qwen2.5 Coder 1.5B | 1 | 1 |" in md


def test_markdown_reply_cannot_break_out(tmp_path: Path) -> None:
    """An unclosed fence is closed and a reply's heading demoted: every turn and model
    heading stays a real heading, outside any code block."""
    md = to_markdown(load_record(write(tmp_path)))
    before_turn3 = md.split("## Turn 3")[0]
    assert before_turn3.count("```") % 2 == 0
    assert "#### Heading from the model" in md and "\n# Heading" not in md
    assert headings(md, "h2", "h3") == [
        "Turn 1",
        "SmolLM2 135M (135M)",
        "Gemma 3 270M (268M)",
        "Qwen2.5 Coder 1.5B (1.5B)",
        "Turn 2",
        "SmolLM2 135M (135M)",
        "Gemma 3 270M (268M)",
        "Qwen2.5 Coder 1.5B (1.5B)",
        "Turn 3",
        "Qwen2.5 Coder 1.5B (1.5B)",
        "Scores",
    ]
    assert html_blocks(md) == []  # "</div>" stays inside the closed code block


def test_markdown_contains_tricky_replies(tmp_path: Path) -> None:
    """Longer and tilde fences, setext headings and raw HTML that would never close stay
    inside their reply; HTML inside code is left as written."""
    events = [
        {"type": "user", "turn": 1, "text": "x <b>"},
        reply(1, "smol-135m", "````\n```\nstill code"),
        reply(
            1,
            "gemma-270m",
            "Title\n===\n<!-- never closed\nClick <details> to see `<b>`\n\n    #include <stdio.h>\n~~~",
        ),
        {"type": "user", "turn": 2, "text": "y"},
        reply(2, "qwen-1.5b", "fine"),
    ]
    md = to_markdown(load_record(write(tmp_path, events)))
    assert headings(md, "h1", "h2") == [headings(md, "h1")[0], "Turn 1", "Turn 2"]
    assert html_blocks(md) == [] and "\\<details>" in md and "\\<b>" in md
    assert "`<b>`" in md and "    #include <stdio.h>" in md and "````\n```\nstill code\n````" in md


class Checked(HTMLParser):
    """Parses HTML and checks every element is closed in order."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unexpected </{tag}>"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_safe_and_one_column_per_model(tmp_path: Path) -> None:
    page = to_html(load_record(write(tmp_path)))
    parser = Checked()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    names = [tag for tag, _ in parser.tags]
    assert "script" not in names and "b" not in names and not {"link", "img", "iframe"} & set(names)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;/div&gt;" in page and "&lt;b&gt;bold" in page
    assert "http" not in page and "\x1b" not in page and "␛[2J" in page
    assert "grid-template-columns:repeat(3," in page and "prefers-color-scheme:dark" in page
    grids = [attrs for tag, attrs in parser.tags if attrs.get("class") == "replies"]
    assert len(grids) == 3
    cells = re.findall(r'<div class="replies">(.*?)</div>\n</section>', page, re.S)
    for cell in cells:
        assert cell.count("<article") == 3
    order = [m for m in re.findall(r"<h3>(.*?) <span", cells[0])]
    assert order == ["SmolLM2 135M", "Gemma 3 270M", "Qwen2.5 Coder 1.5B"]
    text = "".join(parser.text)
    assert "✓ says Finding Nemo" in text and "✗ expected Finding Nemo" in text and "★ best" in text
    assert "📝 wrong film" in text and "(no reply this turn)" in cells[2]
    assert "white-space:pre-wrap" in page and "Guess the film from emoji." in text
    assert "Replay of:" in text and "2026-11-28-101503-what-movie" in text


def test_html_columns_only_for_models_that_answered(tmp_path: Path) -> None:
    events = [{"type": "user", "turn": 1, "text": "x"}, reply(1, "qwen-1.5b", "a"), reply(1, "smol-135m", "b")]
    page = to_html(load_record(write(tmp_path, events)))
    assert "grid-template-columns:repeat(2," in page and page.count("<article") == 2


def test_json_round_trips_reply_events(tmp_path: Path) -> None:
    path = write(tmp_path)
    document = json.loads(to_json(load_record(path)))
    assert (document["format"], document["id"], document["problems"]) == (1, path.stem, [])
    assert document["header"]["scenario"]["id"] == "emoji-movies" and document["header"]["type"] == "session"
    assert [card["id"] for card in document["models"]] == ["smol-135m", "gemma-270m", "qwen-1.5b"]
    assert document["settings"]["system"] == HEADER["system"]
    assert [turn["turn"] for turn in document["turns"]] == [1, 2, 3]
    assert document["turns"][0]["item"]["answer"] == "Finding Nemo"
    assert document["turns"][1]["notes"] == ["a hostile reply"]
    saved = saved_replies(path)
    seen = 0
    for turn in document["turns"]:
        for out in turn["replies"]:
            rest = {key: value for key, value in out.items() if key not in ("best", "notes")}
            assert rest == saved[(turn["turn"], out["model"])]
            seen += 1
    assert seen == len(saved)
    first = {r["model"]: r for r in document["turns"][0]["replies"]}
    assert [r["model"] for r in document["turns"][0]["replies"]] == ["smol-135m", "gemma-270m", "qwen-1.5b"]
    assert first["qwen-1.5b"]["best"] is True and first["smol-135m"]["best"] is False
    assert first["smol-135m"]["notes"] == ["wrong film"] and first["qwen-1.5b"]["check"]["passed"] is True


def test_damaged_transcript_still_exports(tmp_path: Path) -> None:
    """A last line cut off while writing: the rest exports, and the problem is said."""
    path = write(tmp_path)
    with path.open("a", encoding="utf-8") as file:
        file.write('{"type": "reply", "turn": 3, "model": "smol-135m", "text": "cut o')
    record = load_record(path)
    document = json.loads(to_json(record))
    assert any("incomplete" in problem for problem in document["problems"])
    md = to_markdown(record)
    assert "Problems reading this transcript" in md and "incomplete" in md and "## Turn 3" in md
    assert "incomplete" in to_html(record)


def test_minimal_session_and_registry(tmp_path: Path) -> None:
    """No scenario, no system prompt, a model missing from the header: still exported."""
    events = [{"type": "user", "turn": 1, "text": "Hello there"}, reply(1, "stranger", "hi")]
    record = load_record(write(tmp_path, events, header={"models": []}))
    md = to_markdown(record)
    assert md.startswith("# Hello there · ") and "**System prompt:**\n\n(none)" in md and "### stranger (?)" in md
    assert "Scenario" not in md and "Replay" not in md and "## Scores" not in md
    assert "repeat(1," in to_html(record)
    assert set(EXPORTERS) == set(SUFFIXES) == {"md", "html", "json"}
    for kind, export in EXPORTERS.items():
        assert export(record) and SUFFIXES[kind] == f".{kind}"
