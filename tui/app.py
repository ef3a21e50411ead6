"""The chat app (placeholder until the TUI lands)."""

from __future__ import annotations

import argparse


def run_app(args: argparse.Namespace) -> int:
    raise NotImplementedError
