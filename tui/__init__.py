"""Ladder: compare local language models of increasing size side by side."""

__version__ = "0.1.0"
