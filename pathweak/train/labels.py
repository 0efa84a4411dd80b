"""The labels file: one row per slide with ``slide_id``, ``patient_id``, ``label`` and an optional
``split`` (train / val / test); for ``--task survival`` ``time`` and ``event`` instead of ``label``, for
``--task proportion`` a ``label`` that is a share in [0, 1]. Read and checked against the slides that
have features; every problem is one line naming the file, the rows and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LabelsError

REQUIRED = ("slide_id", "patient_id", "label")
SURVIVAL_REQUIRED = ("slide_id", "patient_id", "time", "event")
SPLITS = ("train", "val", "test")


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


def read_labels(
    path: str | Path,
    available: list[str] | None = None,
    task: str = "auto",
    classes: tuple[str, ...] | list[str] | None = None,
) -> LabelTable:
    """Read and check a labels CSV. ``available``: slide ids that have features (a labelled slide
    without features is an error). ``task`` "auto" is regression when every label is a number and
    there are non-integers or more than 10 distinct values, else classification (binary for two
    classes). ``classes`` fixes the class order (the last of two is the positive class); a label outside
    it is an error. Without it classes are sorted (numerically when they are numbers). ``task``
    "survival" reads ``time`` and ``event`` columns (``targets`` is the event), "proportion" a label in
    [0, 1] (see :mod:`pathweak.train.endpoints`)."""
    import pandas as pd

    path = Path(path)
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
    df.columns = [str(c).strip() for c in df.columns]
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
    for col in [
        *required[:2],
        *([] if task == "survival" else ["label"]),
        *(["split"] if "split" in df.columns else []),
    ]:
        df[col] = df[col].str.strip()
        empty = np.nonzero((df[col] == "").to_numpy())[0]
        if len(empty):
            raise LabelsError(f"row {empty[0] + 2} has an empty {col}", path=path, fix="fill it in or remove the row")
    dup = df["slide_id"][df["slide_id"].duplicated(keep=False)]
    if len(dup):
        rows = [str(i + 2) for i in dup.index[:4]]
        raise LabelsError(
            f"slide id {dup.iloc[0]!r} appears more than once (rows {', '.join(rows)})",
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
                f"row {bad[0][0] + 2} has split {df['split'].iloc[bad[0][0]]!r}",
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
    if task == "survival":
        from .endpoints import survival_columns

        times, events = survival_columns(df, path)
        targets, class_list = events.copy(), None
        labels = [f"{t:g},{e}" for t, e in zip(times, events, strict=False)]
    elif task == "proportion":
        from .endpoints import proportion_column

        targets, class_list = proportion_column(labels, path), None
    else:
        task, class_list, targets = _targets(labels, task, classes, path)
    return LabelTable(
        path, list(df["slide_id"]), list(df["patient_id"]), labels, targets, task, class_list, split, times, events
    )


def _targets(
    labels: list[str], task: str, classes: tuple[str, ...] | list[str] | None, path: Path
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
                f"row {bad + 2} has label {labels[bad]!r}, not a number",
                path=path,
                fix="regression needs numeric labels; pass --task binary/multiclass for classes",
            )
        return task, None, numbers.astype(np.float64)
    if classes:
        class_list = [str(c) for c in classes]
        unknown = [(i, v) for i, v in enumerate(labels) if v not in class_list]
        if unknown:
            raise LabelsError(
                f"row {unknown[0][0] + 2} has unknown label {unknown[0][1]!r} (known: {', '.join(class_list)})",
                path=path,
                fix="fix the label or add it with --class",
            )
    else:
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
