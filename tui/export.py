"""Export a saved session to share it: Markdown for a Git forge, one self-contained HTML
page, or one JSON document.

All three work from the read model in `tui.history`, so a damaged transcript exports what
could be read and says what could not. Model and user text is untrusted: in Markdown it is
kept as the model wrote it but fenced in so it cannot end its section or fake a heading; in
HTML it is escaped and shown as plain text; control characters are made visible in both.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tui.history import Reply, SessionRecord
from tui.labels import reply_stats, saved_params_label, size_label
from tui.textsafe import safe_text

# --- shared pieces ---------------------------------------------------------------------------


def _lineup(record: SessionRecord) -> list[dict[str, Any]]:
    """Every model to show, smallest first; replies from models missing in the header (a
    damaged one) still get a place, after the known ones."""
    cards = list(record.models)
    known = {card.get("id") for card in cards}
    for model_id in (model_id for turn in record.turns for model_id in turn.replies):
        if model_id not in known:
            known.add(model_id)
            cards.append(record.model(model_id))
    return cards


def _name(card: dict[str, Any]) -> str:
    return str(card.get("name") or card.get("id") or "?")


def _params(card: dict[str, Any]) -> str:
    return saved_params_label(card.get("params"))


def _served_by(card: dict[str, Any]) -> str:
    endpoint = card.get("endpoint")
    return f"served by {endpoint.get('host')}" if isinstance(endpoint, dict) else ""


def _rows(record: SessionRecord) -> list[tuple[str, ...]]:
    """The lineup table: name, family, parameters, quantisation, file size, sha256 (12) or, for a
    remote model, the server that ran it."""
    return [
        (
            _name(card),
            str(card.get("family") or ""),
            _params(card),
            str(card.get("quant") or ""),
            size_label(card["size"] if type(card.get("size")) is int else None),
            str(card.get("sha256") or "")[:12] or _served_by(card),
        )
        for card in _lineup(record)
    ]


def _title(record: SessionRecord) -> str:
    scenario = record.header.get("scenario")
    title = scenario.get("title") if isinstance(scenario, dict) else None
    if not title and record.turns:
        first = record.turns[0].text.strip().split("\n")[0]
        title = first if len(first) <= 80 else first[:79] + "…"
    try:
        date = f"{datetime.fromisoformat(record.created):%Y-%m-%d %H:%M}"
    except ValueError:
        date = record.created
    return f"{title or 'Ladder session'} · {date}" if date else str(title or "Ladder session")


def _settings_text(values: Any) -> str:
    shown = values.items() if isinstance(values, dict) else []
    return " · ".join(f"{key} {value}" for key, value in shown if value is not None) or "(none)"


def _facts(record: SessionRecord) -> list[tuple[str, str]]:
    """The header lines after the system prompt, as (label, text): the same in every format."""
    facts = [("Sampling", _settings_text(record.settings.get("params")))]
    overrides = record.settings.get("model_params")
    if isinstance(overrides, dict):
        facts += [
            (f"Sampling for {_name(record.model(str(model_id)))}", _settings_text(values))
            for model_id, values in overrides.items()
            if values
        ]
    if any(event.get("type") == "settings" for event in record.transcript.events):
        facts.append(("Note", "settings changed during the session; shown as they were at its end"))
    scenario = record.header.get("scenario")
    if isinstance(scenario, dict):
        names = [str(scenario[key]) for key in ("title", "id") if scenario.get(key)]
        facts.append(
            (
                "Scenario",
                (f"{names[0]} ({names[1]})" if len(names) == 2 else names[0] if names else "?")
                + (f" · check: {scenario['check']}" if scenario.get("check") else ""),
            )
        )
        if scenario.get("description"):
            facts.append(("About it", str(scenario["description"])))
    replay = record.header.get("replay_of")  # the id of the saved session whose turns were sent again
    return facts + ([("Replay of", str(replay))] if replay else [])


def _expected(item: dict[str, Any] | None) -> str | None:
    """The item's answer (the one scenario items show the user), with the others accepted."""
    if not item or not item.get("answer"):
        return None
    also = [str(answer) for answer in item.get("accept") or [] if answer]
    return str(item["answer"]) + (f" (also: {', '.join(also)})" if also else "")


def _stats(reply: Reply) -> list[str]:
    """The reply's numbers as the chat pane shows them, then its error and notices."""
    done = reply.finished()
    return reply_stats(done) + ([done.error] if done.error else []) + done.notices


def _check(reply: Reply) -> tuple[str, str] | None:
    """The check's verdict as (css class, "✓ reason" or "✗ reason")."""
    check = reply.check_result()
    return (
        None
        if check is None
        else ("pass" if check.passed else "fail", f"{'✓' if check.passed else '✗'} {check.reason}".strip())
    )


# --- Markdown --------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^( {0,3})(#{1,6})(?=[ \t]|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CODE_OR_TAG = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)|<(?=[A-Za-z/!?])")


def _contained(text: str) -> str:
    """Model Markdown kept as written, except what would reach past its section: headings
    are demoted below the ### model headings, an unclosed code fence is closed, and raw HTML
    tags are escaped (outside code), as an unclosed <details> or <!-- would swallow the rest."""
    out: list[str] = []
    fence, previous, indented_code = "", "", False
    for line in safe_text(text).split("\n"):
        match = _FENCE.match(line)
        indented_code = not fence and bool(re.match(r" {4}|\t", line)) and (indented_code or not previous.strip())
        if fence:
            if (
                match
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not match.group(2).strip()
            ):
                fence = ""
        elif match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            fence = match.group(1)
        elif not indented_code:
            if heading := _ATX.match(line):
                line = heading.group(1) + "#" * min(len(heading.group(2)) + 3, 6) + line[heading.end() :]
            elif _SETEXT.match(line) and previous.strip():
                line = "\\" + line.lstrip()  # would turn the line above into a heading
            line = _CODE_OR_TAG.sub(lambda m: "\\<" if m.group(0) == "<" else m.group(0), line)
        out.append(line)
        previous = line
    return "\n".join(out + ([fence] if fence else []))


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in _contained(text).split("\n"))


def markdown_inline(text: Any) -> str:
    """One line of plain text inside Markdown markup (a heading, a table cell, the stats)."""
    return re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", " ".join(safe_text(str(text)).split()))


def to_markdown(record: SessionRecord) -> str:
    out = [
        f"# {markdown_inline(_title(record))}",
        "",
        "| Model | Family | Parameters | Quantisation | File size | sha256 or server |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(map(markdown_inline, row)) + " |" for row in _rows(record)),
    ]
    system = record.settings.get("system")
    out += ["", "**System prompt:**", "", _quote(str(system)) if system else "(none)"]
    out += [
        line
        for label, text in _facts(record)
        for line in ("", f"**{markdown_inline(label)}:** {markdown_inline(text)}")
    ]
    if record.problems:
        out += ["", "**Problems reading this transcript** (what follows is what could be read):", ""]
        out += [f"- {markdown_inline(problem)}" for problem in record.problems]
    for turn in record.turns:
        out += ["", f"## Turn {turn.number}", "", _quote(turn.text)]
        if expected := _expected(turn.item):
            out += ["", f"**Expected:** {markdown_inline(expected)}"]
        out += [line for note in turn.notes for line in ("", f"📝 {markdown_inline(note)}")]
        for card in _lineup(record):
            if (reply := turn.replies.get(str(card.get("id")))) is None:
                continue
            verdict = [check[1]] if (check := _check(reply)) else []
            out += [
                "",
                f"### {markdown_inline(_name(card))} ({_params(card)})",
                "",
                _contained(reply.text) if reply.text.strip() else "*(no text)*",
                "",
                f"*{markdown_inline(' · '.join(_stats(reply) + verdict + (['★ best'] if reply.best else [])))}*",
            ]
            out += [line for note in reply.notes for line in ("", f"📝 {markdown_inline(note)}")]
    if scores := record.scores():
        out += ["", "## Scores", "", "| Model | Passed | Checked |", "|---|---|---|"]
        out += [
            f"| {markdown_inline(_name(card))} | {scores[card['id']].passed} | {scores[card['id']].checked} |"
            for card in _lineup(record)
            if card.get("id") in scores
        ]
    return "\n".join(out) + "\n"


# --- HTML ------------------------------------------------------------------------------------

_CSS = """:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--cell:#f6f8fa;
--pass:#1a7f37;--fail:#cf222e;--best:#9a6700}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;
--cell:#151b23;--pass:#3fb950;--fail:#f85149;--best:#d29922}}
body{margin:0;padding:1rem 1.5rem;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,sans-serif}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid var(--line);padding:.2rem .6rem;text-align:left}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.4rem 0;font:13px/1.45 ui-monospace,Menlo,Consolas,monospace}
.user{background:var(--cell);border-left:3px solid var(--muted);padding:.5rem .75rem}
.turn{border-top:1px solid var(--line);margin-top:1.5rem}
.replies{display:grid;grid-template-columns:repeat(COLUMNS,minmax(16rem,1fr));gap:.75rem;overflow-x:auto}
.reply{border:1px solid var(--line);border-radius:6px;padding:.5rem .75rem;min-width:0}
.reply h3{margin:0;font-size:1rem}.small{color:var(--muted);font-size:.85em;margin:.2rem 0}
.pass{color:var(--pass)}.fail{color:var(--fail)}.best{color:var(--best);font-weight:600}.empty{opacity:.5}
.reply.error{border-color:var(--fail)}.reply.cancelled{border-style:dashed}
.problems{border:1px solid var(--fail);border-radius:6px;padding:.25rem 1rem}"""


def _h(text: Any) -> str:
    return html.escape(safe_text(str(text)))


def _pre(text: str, css: str) -> str:
    # A browser drops one newline right after <pre>; add one so a leading blank line stays.
    return f'<pre class="{css}">' + ("\n" if text.startswith("\n") else "") + _h(text) + "</pre>"


def _cell(card: dict[str, Any], reply: Reply | None) -> str:
    name = f'<h3>{_h(_name(card))} <span class="small">{_params(card)}</span></h3>'
    if reply is None:
        return f'<article class="reply empty">{name}<p class="small">(no reply this turn)</p></article>'
    status = reply.status if reply.status in ("done", "cancelled", "error") else "error"
    parts = [
        name,
        _pre(reply.text, "text") if reply.text.strip() else '<p class="small">(no text)</p>',
        f'<p class="small">{_h(" · ".join(_stats(reply)))}</p>',
    ]
    if check := _check(reply):
        parts.append(f'<p class="{check[0]}">{_h(check[1])}</p>')
    parts += ['<p class="best">★ best</p>'] if reply.best else []
    parts += [f'<p class="small">📝 {_h(note)}</p>' for note in reply.notes]
    return f'<article class="reply {status}">' + "".join(parts) + "</article>"


def to_html(record: SessionRecord) -> str:
    answered = {model_id for turn in record.turns for model_id in turn.replies}
    columns = [card for card in _lineup(record) if card.get("id") in answered]
    css = _CSS.replace("COLUMNS", str(max(len(columns), 1)))
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(_title(record))}</title>\n<style>\n{css}\n</style>\n</head>\n<body>\n<header>",
        f"<h1>{_h(_title(record))}</h1>",
        "<table><tr><th>Model</th><th>Family</th><th>Parameters</th>"
        "<th>Quantisation</th><th>File size</th><th>sha256 or server</th></tr>",
        *("<tr>" + "".join(f"<td>{_h(cell)}</td>" for cell in row) + "</tr>" for row in _rows(record)),
        "</table>",
    ]
    system = record.settings.get("system")
    out += ["<p><strong>System prompt:</strong></p>", _pre(str(system), "user") if system else "<p>(none)</p>"]
    out += [f"<p><strong>{_h(label)}:</strong> {_h(text)}</p>" for label, text in _facts(record)]
    if record.problems:
        out.append(
            '<div class="problems"><p>Problems reading this transcript:</p><ul>'
            + "".join(f"<li>{_h(problem)}</li>" for problem in record.problems)
            + "</ul></div>"
        )
    out.append("</header>\n<main>")
    for turn in record.turns:
        out += [f'<section class="turn" id="turn-{turn.number}">\n<h2>Turn {turn.number}</h2>', _pre(turn.text, "user")]
        if expected := _expected(turn.item):
            out.append(f'<p class="small">Expected: {_h(expected)}</p>')
        out += [f'<p class="small">📝 {_h(note)}</p>' for note in turn.notes]
        out += [
            '<div class="replies">',
            *(_cell(card, turn.replies.get(str(card.get("id")))) for card in columns),
            "</div>\n</section>",
        ]
    out.append("</main>")
    if scores := record.scores():
        rows = [(_name(card), scores[card["id"]]) for card in columns if card.get("id") in scores]
        out.append(
            "<h2>Scores</h2>\n<table><tr><th>Model</th><th>Passed</th><th>Checked</th></tr>"
            + "".join(
                f"<tr><td>{_h(name)}</td><td>{score.passed}</td><td>{score.checked}</td></tr>" for name, score in rows
            )
            + "</table>"
        )
    return "\n".join(out) + "\n</body>\n</html>\n"


# --- JSON ------------------------------------------------------------------------------------


def to_json(record: SessionRecord) -> str:
    """Reply events go out unchanged (best and notes added), so they equal the transcript's."""
    lineup = [str(card.get("id")) for card in _lineup(record)]
    turns = [
        {
            "turn": turn.number,
            "text": turn.text,
            "item": turn.item,
            "notes": turn.notes,
            "replies": [
                {"model": reply.model, **reply.event, "best": reply.best, "notes": reply.notes}
                for reply in sorted(turn.replies.values(), key=lambda reply: lineup.index(reply.model))
            ],
        }
        for turn in record.turns
    ]
    return (
        json.dumps(
            {
                "format": 1,
                "id": record.id,
                "header": record.header,
                "models": record.models,
                "settings": record.settings,
                "turns": turns,
                "problems": record.problems,
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n"
    )


EXPORTERS: dict[str, Callable[[SessionRecord], str]] = {"md": to_markdown, "html": to_html, "json": to_json}
SUFFIXES = {"md": ".md", "html": ".html", "json": ".json"}
