"""`ladder sessions list | show ID | search [TEXT] | export ID`: the saved sessions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tui import archive, paths
from tui.archive import SessionSummary
from tui.commands import output
from tui.commands.options import UsageError
from tui.history import Reply, load_record
from tui.labels import reply_stats, saved_params_label
from tui.textsafe import safe_text

PROMPT_WIDTH = 50


def run(args: argparse.Namespace) -> int:
    directory = paths.sessions_dir(args.sessions_dir)
    try:
        return ACTIONS[args.sessions_command](args, directory)
    except ValueError as error:  # the archive's refusals: bad ids, dates, file names
        raise UsageError(str(error)) from None


def _list(args: argparse.Namespace, directory: Path) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit wants a number of sessions, 1 or more")
    summaries = archive.list_sessions(directory)
    if not summaries:
        print(f"no saved sessions in {directory}")
        return 0
    rows: list[tuple[str, ...]] = [("id", "date", "scenario", "lineup", "turns", "first prompt")]
    for summary in summaries[: args.limit]:
        rows.append(
            (
                _line(summary.id),
                _date(summary),
                _line(summary.scenario or "-"),
                _line(summary.lineup or "-"),
                str(summary.turns),
                _line(summary.first_prompt, PROMPT_WIDTH),
            )
        )
    print(output.table(rows))
    if args.limit is not None and len(summaries) > args.limit:
        print(f"({len(summaries) - args.limit} older not shown; --limit {len(summaries)} shows all)")
    _report_damage(summaries)
    return 0


def _show(args: argparse.Namespace, directory: Path) -> int:
    path = archive.resolve(directory, args.id)
    record = load_record(path)
    _warn(record.problems)
    header = record.header
    print(f"session {_line(_id(path, directory))}")
    print(
        f"created {_line(record.created or '?')}   lineup {_line(str(header.get('lineup') or '-'))}   "
        f"scenario {_line(str(record.scenario_id or '-'))}"
    )
    labels = [
        f"{_line(str(card.get('name') or card.get('id')))} ({saved_params_label(card.get('params'))})"
        for card in record.models
    ]
    print(f"models: {', '.join(labels) or '-'}")
    if header.get("system"):
        print(f"system prompt: {_line(str(header['system']))}")
    order = {card.get("id"): n for n, card in enumerate(record.models)}
    for turn in record.turns:
        print(f"\n── turn {turn.number} " + "─" * 40)
        print("user:")
        print(_indent(turn.text))
        expected = (turn.item or {}).get("answer")
        if expected:
            print(f"  (expected: {_line(str(expected))})")
        for note in turn.notes:
            print(f"  note: {_line(note)}")
        for reply in sorted(turn.replies.values(), key=lambda r: order.get(r.model, len(order))):
            card = record.model(reply.model)
            name = str(card.get("name") or reply.model)
            print(f"\n{_line(name)}" + (f" [{_line(reply.model)}]" if name != reply.model else "") + ":")
            print(_indent(reply.text))
            print(f"  ({_stats(reply)})")
            for note in reply.notes:
                print(f"  note: {_line(note)}")
    return 0


def _search(args: argparse.Namespace, directory: Path) -> int:
    hits = archive.search(
        directory, args.text, model=args.model, scenario=args.scenario, since=args.since, until=args.until
    )
    if not hits:
        print("no sessions match")
        return 1  # like grep: scripts can tell "nothing found" apart
    for hit in hits:
        summary = hit.summary
        print(f"{_line(summary.id)}   {_date(summary)}   {_line(summary.scenario or summary.lineup or '-')}")
        if not args.text:
            print(f"  {_line(summary.first_prompt, 80)}")
        for snippet in hit.snippets:
            print(f"  turn {snippet.turn}, {_line(snippet.who)}: {_line(snippet.text)}")
    _report_damage([hit.summary for hit in hits])
    return 0


def _export(args: argparse.Namespace, directory: Path) -> int:
    from tui.export import EXPORTERS, SUFFIXES

    to_file = args.output not in (None, "-")  # `-o -`: standard output, as usual
    target = archive.safe_output_path(args.output, force=args.force) if to_file else None
    kind = args.format or _format_of(target, SUFFIXES)
    if kind not in EXPORTERS:
        raise UsageError(f"unknown format '{kind}' (known: {', '.join(sorted(EXPORTERS))})")
    path = archive.resolve(directory, args.id)
    record = load_record(path)
    _warn(record.problems)
    text = EXPORTERS[kind](record)
    if target is None:
        # On a terminal, escape sequences in model text are shown, not obeyed; a pipe gets the file as is.
        sys.stdout.write(safe_text(text) if sys.stdout.isatty() else text)
        return 0
    try:
        archive.write_output(target, text, force=args.force)
    except FileExistsError:
        raise UsageError(f"{target} exists; add --force to overwrite it") from None
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror}") from None
    print(f"wrote {target}", file=sys.stderr)
    return 0


ACTIONS = {"list": _list, "show": _show, "search": _search, "export": _export}


def _format_of(target: Path | None, suffixes: dict[str, str]) -> str:
    """Without --format: from the output file's suffix, else Markdown."""
    if target is not None:
        for kind, suffix in suffixes.items():
            if target.suffix.lower() == suffix:
                return kind
    return "md"


def _id(path: Path, directory: Path) -> str:
    return f"{archive.EXAMPLES}/{path.stem}" if path.parent == directory / archive.EXAMPLES else path.stem


def _line(text: str, width: int | None = None) -> str:
    """One line, safe for a terminal, cut to `width`."""
    line = safe_text(" ".join(text.split()))
    return line if width is None or len(line) <= width else line[: width - 1] + "…"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in safe_text(text).split("\n")) if text else "  (empty)"


def _date(summary: SessionSummary) -> str:
    return f"{summary.created_at:%Y-%m-%d %H:%M}"


def _stats(reply: Reply) -> str:
    try:
        done = reply.finished()
    except (TypeError, ValueError):  # wrong-typed fields in a damaged transcript
        return _line(reply.status or "?")
    parts = reply_stats(done)  # as the chat pane and the exports show them
    if done.error:
        parts.append(f"error: {done.error}")
    check = reply.check_result()
    if check is not None:
        parts.append(f"{'✓' if check.passed else '✗'} {check.reason}".strip())
    if reply.best:
        parts.append("★ best")
    return _line(" · ".join(parts + done.notices))


def _warn(problems: list[str]) -> None:
    for problem in problems:
        output.warn(_line(problem))


def _report_damage(summaries: list[SessionSummary]) -> None:
    damaged = [summary.id for summary in summaries if summary.problems]
    if damaged:
        output.warn(
            f"{len(damaged)} session(s) damaged (e.g. {_line(damaged[0])}); "
            "`ladder sessions show ID` says what could not be read"
        )
