"""Stage stamps: ``<out>/state/stamps/<name>.json`` records the key of everything an output was made
from (inputs' cache keys, settings) and the files it wrote, so a rerun skips it when nothing changed
and redoes it when anything did or a file is gone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._atomic import atomic_file


def stamp_path(out: Path, name: str) -> Path:
    return out / "state" / "stamps" / f"{name}.json"


def read_stamp(out: Path, name: str, key: str) -> dict[str, Any] | None:
    """The stamp ``name`` if it was written for ``key`` and every file it lists still exists."""
    try:
        data = json.loads(stamp_path(out, name).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key or not all(Path(p).exists() for p in data.get("files", [])):
        return None
    return data


def write_stamp(out: Path, name: str, key: str, files: Sequence[str | Path], **info: Any) -> None:
    """Record that ``files`` were made from ``key`` (written atomically, after the files)."""
    path = stamp_path(out, name)
    with atomic_file(path) as fh:
        fh.write(json.dumps({"key": key, "files": [str(f) for f in files], **info}, indent=2, default=str))


def record_stage_seconds(out: Path, stage: str, seconds: float, did_work: bool) -> None:
    """Remember how long ``stage`` took when it last did work (``<out>/state/timings.json``); a run that
    skipped it keeps the time of the run that made its outputs."""
    if not did_work:
        return
    path = out / "state" / "timings.json"
    times = read_stage_seconds(out)
    times[stage] = round(float(seconds), 1)
    with atomic_file(path) as fh:
        fh.write(json.dumps(times, indent=2))


def read_stage_seconds(out: Path) -> dict[str, float]:
    """Each stage's seconds when it last did work (see :func:`record_stage_seconds`); the time the current
    outputs took is their sum."""
    try:
        return {str(k): float(v) for k, v in json.loads((out / "state" / "timings.json").read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}
