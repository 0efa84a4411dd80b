"""The labels file: one row per slide with ``slide_id``, ``patient_id``, ``label`` and an optional
``split`` (train / val / test); for ``--task survival`` ``time`` and ``event`` instead of ``label``, for
``--task proportion`` a ``label`` that is a share in [0, 1]. Read and checked against the slides that
have features; every problem is one line naming the file, the rows and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LabelsError
from .label_checks import censored_at_zero, check_missing, check_patient_outcomes, check_spellings

REQUIRED = ("slide_id", "patient_id", "label")
SURVIVAL_REQUIRED = ("slide_id", "patient_id", "time", "event")
SPLITS = ("train", "val", "test")
DATAFRAME = Path("<labels DataFrame>")  # what errors name when the labels are a DataFrame


@dataclass
class LabelTable:
    """Labelled slides in file order. ``targets``: class indices (int64) or the regression target
    (float64); ``classes`` is the label map (index → name), None for regression."""

    path: Path
    slide_ids: list[str]
    patient_ids: list[str]
    labels: list[str]
    targets: np.ndarray
    task: str  # binary | multiclass | regression | survival | proportion
    classes: list[str] | None
    split: list[str] | None
    times: np.ndarray | None = None  # survival: follow-up time per slide (float64, >= 0)
    events: np.ndarray | None = None  # survival: 1 event, 0 censored (int64)
    warnings: list[str] = field(default_factory=list)  # what is allowed but suspicious (docs/input_checks.md)
    # a reviewer's per-tile corrections: row -> (tile rows, class indices) (train/instance_labels.py)
    instance_labels: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.slide_ids)

    @property
    def n_outputs(self) -> int:
        """Head outputs: classes, or 1 (regression, proportion, Cox survival; see ``head_outputs`` in fit)."""
        return 1 if self.classes is None else len(self.classes)

    def survival_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, events) of a survival table; a ``ValueError`` for a table of another task."""
        if self.times is None or self.events is None:
            raise ValueError(f"{self.path}: a {self.task} label table has no survival times and events")
        return self.times, self.events

    def without(self, slide_ids: set[str]) -> LabelTable:
        """The table without the rows of ``slide_ids`` (e.g. slides whose bags are empty)."""
        keep = np.array([s not in slide_ids for s in self.slide_ids], bool)
        new_row = np.cumsum(keep) - 1

        def pick(values: Any) -> Any:
            if values is None:
                return None
            return (
                values[keep] if isinstance(values, np.ndarray) else [v for v, k in zip(values, keep, strict=True) if k]
            )

        return replace(
            self,
            slide_ids=pick(self.slide_ids),
            patient_ids=pick(self.patient_ids),
            labels=pick(self.labels),
            targets=pick(self.targets),
            split=pick(self.split),
            times=pick(self.times),
            events=pick(self.events),
            warnings=list(self.warnings),
            instance_labels=None
            if self.instance_labels is None
            else {int(new_row[i]): v for i, v in self.instance_labels.items() if keep[i]},
        )


def read_labels(
    path: str | PathLike[str] | Any,
    available: list[str] | None = None,
    task: str = "auto",
    classes: tuple[str, ...] | list[str] | None = None,
) -> LabelTable:
    """Read and check a labels CSV (or a pandas DataFrame with the same columns). ``available``: slide ids
    that have features (a labelled slide without features is an error). ``task`` "auto" is regression
    when every label is a number and there are non-integers or more than 10 distinct values, else
    classification (binary for two classes). ``classes`` fixes the class order (the last of two is the
    positive class); a label outside it is an error. Without it classes are sorted (numerically when they
    are numbers). ``task`` "survival" reads ``time`` and ``event`` columns (``targets`` is the event),
    "proportion" a label in [0, 1] (see :mod:`pathweak.train.endpoints`). Missing-value markers
    (``NaN``, ``NA``) and spellings of one class that differ in case or spacing are errors
    (:mod:`pathweak.train.label_checks`)."""
    df, where = _read_frame(path)
    return frame_labels(df, where, available, task, classes)


def _read_frame(source: Any) -> tuple[Any, Path]:
    """The labels as a frame of strings, and the path errors name (``DATAFRAME`` for a DataFrame)."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        df = source.reset_index() if source.index.name in (*SURVIVAL_REQUIRED, "label") else source
        df = df.reset_index(drop=True).astype(object)
        return df.where(df.notna(), "").astype(str), DATAFRAME
    if not isinstance(source, (str, PathLike)):
        raise LabelsError(
            f"labels must be a CSV path or a pandas DataFrame, not a {type(source).__name__}",
            fix="pass the path of a CSV with slide_id, patient_id, label columns, or a DataFrame of them",
        )
    path = Path(source)
    if not path.is_file():
        raise LabelsError("labels file not found", path=path, fix="pass a CSV with slide_id, patient_id, label columns")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelsError(
            f"not a readable CSV ({str(exc).splitlines()[0]})",
            path=path,
            fix="write a CSV with a header row slide_id,patient_id,label",
        ) from None
    return df, path


def frame_labels(
    df: Any,
    path: Path,
    available: list[str] | None = None,
    task: str = "auto",
    classes: tuple[str, ...] | list[str] | None = None,
) -> LabelTable:
    """:func:`read_labels` of a frame of strings; ``path`` is what errors name. Rows are numbered as in a
    spreadsheet from the frame's index (index 0 is row 2, below the header), so a frame of some rows of a
    file (the cohort manifest's labelled slides) names the file's own rows."""
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    lines = df.index.to_numpy(np.int64) + 2
    required = SURVIVAL_REQUIRED if task == "survival" else REQUIRED
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = (
            " (survival labels are time and event: pass --task survival)"
            if ("label" in missing and {"time", "event"} <= set(df.columns))
            else ""
        )
        raise LabelsError(
            f"no {', '.join(missing)} column (columns: {', '.join(df.columns) or 'none'}){hint}",
            path=path,
            fix="add it; patient_id may repeat the slide_id when each patient has one slide",
        )
    if df.empty:
        raise LabelsError("no rows", path=path, fix="add one row per slide")
    if task == "survival" and "label" not in df.columns:
        df["label"] = ""
    checked = [*required[:2], *([] if task == "survival" else ["label"]), *(["split"] if "split" in df.columns else [])]
    for col in checked:
        df[col] = df[col].str.strip()
        empty = np.nonzero((df[col] == "").to_numpy())[0]
        if len(empty):
            raise LabelsError(
                f"row {lines[empty[0]]} has an empty {col}", path=path, fix="fill it in or remove the row"
            )
        if col != "split":  # a split value is checked against train / val / test below
            check_missing(list(df[col]), col, lines, path, allowed=(classes or ()) if col == "label" else ())
    dup = np.nonzero(df["slide_id"].duplicated(keep=False).to_numpy())[0]
    if len(dup):
        rows = [str(i) for i in lines[dup[:4]]]
        raise LabelsError(
            f"slide id {df['slide_id'].iloc[dup[0]]!r} appears more than once (rows {', '.join(rows)})",
            path=path,
            fix="keep one row per slide",
        )
    if available is not None:
        have = set(available)
        absent = [s for s in df["slide_id"] if s not in have]
        if absent:
            more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
            raise LabelsError(
                f"slide {', '.join(absent[:3])}{more} has no features",
                path=path,
                fix="extract its features (pathweak extract) or remove the row",
            )
    split = None
    if "split" in df.columns:
        split = [s.lower() for s in df["split"]]
        bad = [(i, s) for i, s in enumerate(split) if s not in SPLITS]
        if bad:
            raise LabelsError(
                f"row {lines[bad[0][0]]} has split {df['split'].iloc[bad[0][0]]!r}",
                path=path,
                fix="use train, val or test",
            )
        for needed in ("train", "test"):
            if needed not in split:
                raise LabelsError(
                    f"the split column has no {needed} slides",
                    path=path,
                    fix="mark some slides train and some test (val is optional)",
                )
    labels = list(df["label"])
    times = events = None
    warnings: list[str] = []
    if task == "survival":
        from .endpoints import survival_columns

        times, events = survival_columns(df, path)
        warnings += check_patient_outcomes(list(df["patient_id"]), times, events, lines, path)
        warnings += censored_at_zero(times, events, lines, path)
        targets, class_list = events.copy(), None
        labels = [f"{t:g},{e}" for t, e in zip(times, events, strict=False)]
    elif task == "proportion":
        from .endpoints import proportion_column

        targets, class_list = proportion_column(labels, path, lines), None
    else:
        task, class_list, targets = _targets(labels, task, classes, path, lines)
    return LabelTable(
        path,
        list(df["slide_id"]),
        list(df["patient_id"]),
        labels,
        targets,
        task,
        class_list,
        split,
        times,
        events,
        warnings,
    )


def _targets(
    labels: list[str], task: str, classes: tuple[str, ...] | list[str] | None, path: Path, lines: np.ndarray
) -> tuple[str, list[str] | None, np.ndarray]:
    numbers = _as_numbers(labels)
    if task == "auto":
        is_regression = (
            numbers is not None
            and classes is None
            and (not np.all(numbers == np.round(numbers)) or len(np.unique(numbers)) > 10)
        )
        task = "regression" if is_regression else "classification"
    if task == "regression":
        if numbers is None:
            bad = next(i for i, v in enumerate(labels) if _as_numbers([v]) is None)
            raise LabelsError(
                f"row {lines[bad]} has label {labels[bad]!r}, not a number",
                path=path,
                fix="regression needs numeric labels; pass --task binary/multiclass for classes",
            )
        return task, None, numbers.astype(np.float64)
    if classes:
        class_list = [str(c) for c in classes]
        unknown = [(i, v) for i, v in enumerate(labels) if v not in class_list]
        if unknown:
            raise LabelsError(
                f"row {lines[unknown[0][0]]} has unknown label {unknown[0][1]!r} (known: {', '.join(class_list)})",
                path=path,
                fix="fix the label or add it with --class",
            )
    else:
        check_spellings(labels, lines, path)
        distinct = sorted(set(labels))
        class_list = sorted(distinct, key=float) if numbers is not None else distinct
    if len(class_list) < 2:
        raise LabelsError(
            f"only one class ({class_list[0]!r}) among the labels",
            path=path,
            fix="classification needs slides of at least two classes",
        )
    if task == "binary" and len(class_list) != 2:
        raise LabelsError(
            f"a binary task needs 2 classes, the labels have {len(class_list)} ({', '.join(class_list[:5])})",
            path=path,
            fix="pass --task multiclass, or --class twice to name the two",
        )
    if task == "classification":
        task = "binary" if len(class_list) == 2 else "multiclass"
    index = {c: i for i, c in enumerate(class_list)}
    return task, class_list, np.array([index[v] for v in labels], np.int64)


def _as_numbers(values: list[str]) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in values], np.float64)
    except ValueError:
        return None
    return out if np.all(np.isfinite(out)) else None
