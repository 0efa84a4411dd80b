"""Names of score columns, shared by training, prediction and the exports (imports nothing heavy)."""

from __future__ import annotations


def safe_name(name: str) -> str:
    """A class name usable in column and score names (no '/', no commas, no spaces)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def score_columns(classes: list[str] | None, task: str | None = None) -> list[str]:
    """Slide prediction columns: ``prob_<class>`` per class, ``risk`` (survival), ``proportion``, or
    ``prediction`` for regression."""
    if task in ("survival", "proportion"):
        return ["risk" if task == "survival" else "proportion"]
    return ["prediction"] if classes is None else [f"prob_{safe_name(c)}" for c in classes]


def tile_score_columns(classes: list[str] | None, task: str | None = None) -> list[str]:
    """Per-tile score names: as :func:`score_columns`, but ``prob_positive`` for proportion."""
    return ["prob_positive"] if task == "proportion" else score_columns(classes, task)
