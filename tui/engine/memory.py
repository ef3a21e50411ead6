"""What a process holds in memory, from Linux's own accounts (elsewhere: unknown, None)."""

from __future__ import annotations

from pathlib import Path


def resident(pid: int | str = "self") -> dict[str, int] | None:
    """Bytes resident (`rss`) and the process's proportional share of them (`pss`: pages shared
    with other processes, such as llama.cpp's and numpy's libraries in every worker, count once
    across them all)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("Rss", "Pss") and value.strip().endswith("kB"):
            found[name.lower()] = int(value.split()[0]) * 1024
    return found if len(found) == 2 else None
