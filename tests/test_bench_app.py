"""`ladder bench` figure 4 reads the chat app's screen from a real terminal (tmux): here on
scripted models, so that it runs in seconds. Its numbers are not checked: timings belong in
the benchmark; what is checked is that every pane, key and second was read."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from scripted_chat import CARDS

from tui.commands.bench_app import app_table, pane_regions, terminal_figure

SCREEN = """\
 Ladder · scripted
╭──────────╮ ╭──────────╮
│ M1       │ │ M2       │
│ ● ready  │ │ ● ready  │
│──────────│ │──────────│
│ reply    │ │ reply    │
│ text     │ │          │
│ 3 tok    │ │ 2 tok    │
│          │ │          │
╰──────────╯ ╰──────────╯
╭──────────────────────╮
│ composer             │
╰──────────────────────╯"""


def test_each_panes_text_is_found_inside_its_border_above_its_two_footer_lines() -> None:
    screen = SCREEN.splitlines()
    assert pane_regions(screen) == [(1, 11, 2, 7), (14, 24, 2, 7)]  # columns inside, rows from the header on
    left, right, top, bottom = pane_regions(screen)[0]
    assert [line[left:right].strip() for line in screen[top:bottom]] == ["M1", "● ready", "──────────", "reply", "text"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="figure 4 reads the screen through tmux")
@pytest.mark.timeout(180)
def test_figure_4_reads_every_panes_updates_keys_and_cpu_from_the_terminal(tmp_path: Path) -> None:
    models = [card.id for card in CARDS]
    command = [sys.executable, str(Path(__file__).parent / "scripted_chat.py"), str(tmp_path)]
    report = terminal_figure(command, models, tmp_path, quick=True)
    assert list(report["updates_per_s"]) == models and report["screens_read"] > 5
    by_second = report["updates_by_second"]
    assert all(len(by_second[model]) == 2 and sum(by_second[model]) > 0 for model in models)  # each pane's text changed
    assert report["updates_per_s_slowest"] == min(report["updates_per_s"].values())
    assert report["panes_still_streaming_at_end"] == len(models)
    for latency in (report["key_latency_idle_ms"], report["key_latency_streaming_ms"]):
        assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]  # every key was seen on the screen
    assert 0 < report["ui_cpu_share_of_one_core"] <= (os.cpu_count() or 1)
    assert set(report["tokens_per_s"]) == set(models)  # from the transcript: the replies were saved, cancelled
    table = "\n".join(app_table(report))
    assert table.startswith("4. chat app") and "updates a second per pane" in table and "% of one core" in table
    assert "in this run: every pane ≥ 8 updates/s" in table  # each goal said met or not
