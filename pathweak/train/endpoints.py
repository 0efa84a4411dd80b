"""Labels of the clinical endpoints, checked like the class labels: ``time`` / ``event`` columns for
``--task survival`` and a share in [0, 1] for ``--task proportion``. Every problem is one line naming
the file, the rows (as numbered in a spreadsheet: the header is row 1) and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LabelsError

TRUE_EVENTS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0}


def _rows(idx: np.ndarray | list[int]) -> str:
    """'row 3' or 'rows 3, 7, 9 and 4 more' (spreadsheet numbering)."""
    idx = [int(i) + 2 for i in idx]
    more = f" and {len(idx) - 4} more" if len(idx) > 4 else ""
    return ("row " if len(idx) == 1 else "rows ") + ", ".join(str(i) for i in idx[:4]) + more


def survival_columns(df: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(time float64, event int64) of a labels frame (strings): times are numbers >= 0, events 0 or 1,
    neither missing; at least one event."""
    time_text = [str(v).strip() for v in df["time"]]
    event_text = [str(v).strip() for v in df["event"]]
    for name, text in (("time", time_text), ("event", event_text)):
        empty = [i for i, v in enumerate(text) if v == "" or v.lower() in ("na", "nan", "none", "null")]
        if empty:
            raise LabelsError(
                f"{_rows(empty)} {'has' if len(empty) == 1 else 'have'} no {name} (missing value)",
                path=path,
                fix=f"fill in the {name} of every slide (event 1 = event observed, 0 = censored) or remove the rows",
            )
    times = _numbers(time_text)
    bad = np.nonzero(~np.isfinite(times))[0]
    if len(bad):
        raise LabelsError(
            f"{_rows(bad)} {'has' if len(bad) == 1 else 'have'} time {time_text[bad[0]]!r}, not a number",
            path=path,
            fix="write follow-up times as numbers (e.g. months)",
        )
    neg = np.nonzero(times < 0)[0]
    if len(neg):
        raise LabelsError(
            f"{_rows(neg)} {'has a' if len(neg) == 1 else 'have'} negative time ({time_text[neg[0]]})",
            path=path,
            fix="times are follow-up durations from diagnosis: 0 or more",
        )
    bad_events = [i for i, v in enumerate(event_text) if v not in TRUE_EVENTS]
    if bad_events:
        raise LabelsError(
            f"{_rows(bad_events)} {'has' if len(bad_events) == 1 else 'have'} event "
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


def proportion_column(labels: list[str], path: Path) -> np.ndarray:
    """The label as a share in [0, 1] (float64)."""
    values = _numbers(labels)
    bad = np.nonzero(~np.isfinite(values))[0]
    if len(bad):
        raise LabelsError(
            f"{_rows(bad)} {'has' if len(bad) == 1 else 'have'} label {labels[bad[0]]!r}, not a number",
            path=path,
            fix="a proportion label is the share of the slide's positive tiles, in [0, 1]",
        )
    out = np.nonzero((values < 0) | (values > 1))[0]
    if len(out):
        pct = " (percentages? divide by 100)" if np.all(values[out] <= 100) and np.all(values >= 0) else ""
        raise LabelsError(
            f"{_rows(out)} {'has' if len(out) == 1 else 'have'} label {labels[out[0]]}, outside [0, 1]{pct}",
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
