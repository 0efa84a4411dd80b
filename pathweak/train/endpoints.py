"""Labels of the clinical endpoints, checked like the class labels: ``time`` / ``event`` columns for
``--task survival`` and a share in [0, 1] for ``--task proportion``. Every problem is one line naming
the file, the rows (as numbered in a spreadsheet: the header is row 1) and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LabelsError
from .label_checks import is_missing, rows_text

TRUE_EVENTS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0}


def _rows(lines: np.ndarray, idx: Any) -> str:
    """The spreadsheet rows of positions ``idx``."""
    return rows_text(lines[np.asarray(idx, np.int64)])


def survival_columns(df: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(time float64, event int64) of a labels frame (strings): times are numbers >= 0, events 0 or 1,
    neither missing; at least one event. Rows are named by the frame's index (index 0 is row 2)."""
    lines = df.index.to_numpy(np.int64) + 2
    time_text = [str(v).strip() for v in df["time"]]
    event_text = [str(v).strip() for v in df["event"]]
    for name, text in (("time", time_text), ("event", event_text)):
        empty = [i for i, v in enumerate(text) if v == "" or is_missing(v)]
        if empty:
            raise LabelsError(
                f"{_rows(lines, empty)} {'has' if len(empty) == 1 else 'have'} no {name} (missing value)",
                path=path,
                fix=f"fill in the {name} of every slide (event 1 = event observed, 0 = censored) or remove the rows",
            )
    times = _numbers(time_text)
    bad = np.nonzero(~np.isfinite(times))[0]
    if len(bad):
        raise LabelsError(
            f"{_rows(lines, bad)} {'has' if len(bad) == 1 else 'have'} time {time_text[bad[0]]!r}, not a number",
            path=path,
            fix="write follow-up times as numbers (e.g. months)",
        )
    neg = np.nonzero(times < 0)[0]
    if len(neg):
        raise LabelsError(
            f"{_rows(lines, neg)} {'has a' if len(neg) == 1 else 'have'} negative time ({time_text[neg[0]]})",
            path=path,
            fix="times are follow-up durations from diagnosis: 0 or more",
        )
    bad_events = [i for i, v in enumerate(event_text) if v not in TRUE_EVENTS]
    if bad_events:
        raise LabelsError(
            f"{_rows(lines, bad_events)} {'has' if len(bad_events) == 1 else 'have'} event "
            f"{event_text[bad_events[0]]!r}, not 0 or 1",
            path=path,
            fix="write event as 1 (event observed) or 0 (censored)",
        )
    events = np.array([TRUE_EVENTS[v] for v in event_text], np.int64)
    if not events.any():
        raise LabelsError(
            "no slide has an event (every event is 0)",
            path=path,
            fix="survival models need observed events (event = 1) among the slides",
        )
    return times, events


def proportion_column(labels: list[str], path: Path, lines: np.ndarray | None = None) -> np.ndarray:
    """The label as a share in [0, 1] (float64); ``lines``: the rows' spreadsheet numbers (default 2, 3, ...)."""
    lines = np.arange(len(labels)) + 2 if lines is None else np.asarray(lines)
    values = _numbers(labels)
    bad = np.nonzero(~np.isfinite(values))[0]
    if len(bad):
        raise LabelsError(
            f"{_rows(lines, bad)} {'has' if len(bad) == 1 else 'have'} label {labels[bad[0]]!r}, not a number",
            path=path,
            fix="a proportion label is the share of the slide's positive tiles, in [0, 1]",
        )
    out = np.nonzero((values < 0) | (values > 1))[0]
    if len(out):
        pct = " (percentages? divide by 100)" if np.all(values[out] <= 100) and np.all(values >= 0) else ""
        raise LabelsError(
            f"{_rows(lines, out)} {'has' if len(out) == 1 else 'have'} label {labels[out[0]]}, outside [0, 1]{pct}",
            path=path,
            fix="write the share of positive tiles as a number from 0 to 1",
        )
    return values


def _numbers(text: list[str]) -> np.ndarray:
    """The strings as float64, NaN where one is not a number."""
    values = np.full(len(text), np.nan)
    for i, v in enumerate(text):
        try:
            values[i] = float(v)
        except ValueError:
            pass
    return values
