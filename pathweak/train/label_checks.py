"""Checks of a labels table for values that read fine but cannot mean what the user wanted: missing-value
markers (``NaN``, ``NA``, ...) read as a class or an id, spellings of one class that differ only in case
or spacing (``Tumour`` / ``tumour``), one patient with two survival outcomes, and slides censored at time
0. Each is an error naming the file and the rows, or a warning the run records (docs/input_checks.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import LabelsError

# what pandas reads as missing by default, compared case-insensitively, plus None / null spelt any way
MISSING_MARKERS = frozenset(
    m.casefold()
    for m in (
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
    )
)


def rows_text(lines: Sequence[int] | np.ndarray) -> str:
    """'row 3' or 'rows 3, 7, 9, 12 and 4 more' (``lines``: spreadsheet row numbers, the header is row 1)."""
    lines = [int(i) for i in lines]
    more = f" and {len(lines) - 4} more" if len(lines) > 4 else ""
    return ("row " if len(lines) == 1 else "rows ") + ", ".join(str(i) for i in lines[:4]) + more


def is_missing(value: str) -> bool:
    """True for a missing-value marker (``NaN``, ``NA``, ``N/A``, ``null``, ``None``, ...)."""
    return value.strip().casefold() in MISSING_MARKERS


def check_missing(
    values: Sequence[str], column: str, lines: np.ndarray, path: Path, allowed: Sequence[str] = ()
) -> None:
    """A missing-value marker in ``column`` is an error naming the rows (``allowed``: values that are
    classes on purpose, listed with ``--class``)."""
    keep = set(allowed)
    bad = [i for i, v in enumerate(values) if is_missing(v) and v not in keep]
    if not bad:
        return
    first = values[bad[0]]
    also = (
        " (if it is a class, list every class with --class, or train: classes: in a cohort spec)"
        if column == "label"
        else ""
    )
    raise LabelsError(
        f"{rows_text(lines[bad])} {'has' if len(bad) == 1 else 'have'} {column} {first!r}, a missing-value marker{also}",
        path=path,
        fix=f"fill in the {column} or remove the rows",
    )


def check_spellings(labels: Sequence[str], lines: np.ndarray, path: Path) -> None:
    """Class labels that differ only in case or spacing (``Tumour``, ``tumour``, ``tu mour``), or numbers
    written two ways (``1``, ``1.0``), are an error naming the rows: they would train as separate classes.
    Called when the classes are not listed with ``--class`` (listing both spellings keeps them apart)."""
    groups: dict[object, dict[str, list[int]]] = {}
    for i, v in enumerate(labels):
        groups.setdefault(_class_key(v), {}).setdefault(v, []).append(i)
    for spellings in groups.values():
        if len(spellings) > 1:
            parts = [f"{v!r} ({rows_text(lines[idx])})" for v, idx in list(spellings.items())[:3]]
            raise LabelsError(
                f"labels {' and '.join(parts)} differ only in case, spacing or number format, so they would train as "
                f"{len(spellings)} classes",
                path=path,
                fix="write each class one way, or list every spelling with --class (train: classes: in a cohort spec) if they are different classes",
            )


def _class_key(label: str) -> object:
    try:
        number = float(label)
    except ValueError:
        return "".join(label.casefold().split())
    return number if np.isfinite(number) else label


def check_patient_outcomes(
    patients: Sequence[str], times: np.ndarray, events: np.ndarray, lines: np.ndarray, path: Path
) -> list[str]:
    """Survival outcomes per patient: two event values for one patient are an error (the patient had the
    event or did not); two follow-up times with the same event are a warning (times measured from each
    slide's own date are possible, a merge mistake is likelier). Returns the warnings."""
    by_patient: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        by_patient.setdefault(p, []).append(i)
    differing_times = []
    for patient, idx in by_patient.items():
        if len(idx) < 2:
            continue
        if len(set(events[idx].tolist())) > 1:
            raise LabelsError(
                f"patient {patient!r} has slides with event 1 and event 0 ({rows_text(lines[idx])})",
                path=path,
                fix="give every slide of a patient the patient's event (1 = observed, 0 = censored)",
            )
        if len(set(times[idx].tolist())) > 1:
            differing_times.append((patient, idx))
    if not differing_times:
        return []
    patient, idx = differing_times[0]
    more = f" (and {len(differing_times) - 1} more patients)" if len(differing_times) > 1 else ""
    shown = ", ".join(f"{t:g}" for t in times[idx][:4])
    return [
        f"{path}: patient {patient!r} has slides with different follow-up times ({shown}; {rows_text(lines[idx])}){more}; "
        "survival is a patient's outcome, so each slide counts with its own time. Give every slide of a patient "
        "the patient's time unless the times are measured from each slide's own date"
    ]


def censored_at_zero(times: np.ndarray, events: np.ndarray, lines: np.ndarray, path: Path) -> list[str]:
    """A warning for slides censored at time 0: they are at risk at no event time, so they add nothing to the
    Cox likelihood or the concordance (often a missing follow-up written as 0)."""
    idx = np.nonzero((times == 0) & (events == 0))[0]
    if not len(idx):
        return []
    return [
        f"{path}: {rows_text(lines[idx])} {'is' if len(idx) == 1 else 'are'} censored at time 0, so "
        f"{'it adds' if len(idx) == 1 else 'they add'} nothing to the Cox likelihood or the concordance; "
        "check that the follow-up time is not a missing value written as 0"
    ]
