"""Names of score columns, shared by training, prediction and the exports (imports nothing heavy)."""

from __future__ import annotations


def safe_name(name: str) -> str:
    """A class name usable in column and score names (no '/', no commas, no spaces)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))
