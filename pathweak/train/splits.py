"""Patient-level splits: stratified k-fold cross-validation in which a patient's slides stay together,
or the labels file's own ``split`` column. Each fold's validation patients come from its training side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LabelsError
from .labels import LabelTable


@dataclass(frozen=True)
class Fold:
    """Row positions (into the :class:`LabelTable`) of one fold's train, validation and test slides."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def role_of(self, n: int) -> list[str]:
        roles = [""] * n
        for name in ("train", "val", "test"):
            for i in getattr(self, name):
                roles[int(i)] = name
        return roles


def make_folds(table: LabelTable, folds: int = 5, seed: int = 0, val_fraction: float = 0.2) -> list[Fold]:
    """The folds of ``table``: from its split column (one fold) or ``folds``-fold stratified group
    k-fold over patients (each slide is in exactly one test fold). The result is checked by
    :func:`check_folds`."""
    patients = np.asarray(table.patient_ids)
    strata = _strata(table)
    if table.split is not None:
        split = np.asarray(table.split)
        train, val, test = (np.nonzero(split == s)[0] for s in ("train", "val", "test"))
        _check_split_classes(table, train)
        if not len(val):
            train, val = _carve(train, strata, patients, val_fraction, seed, table)
        out = [Fold(0, train, val, test)]
    else:
        from sklearn.model_selection import StratifiedGroupKFold

        n_patients = len(set(table.patient_ids))
        if n_patients < folds:
            raise LabelsError(
                f"{n_patients} patients cannot fill {folds} folds",
                path=table.path,
                fix=f"pass --folds {max(2, n_patients)} or fewer, or label more patients",
            )
        _check_class_patients(table, folds, "--folds")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        out = []
        for k, (rest, test) in enumerate(splitter.split(np.zeros(len(table)), strata, patients)):
            train, val = _carve(rest, strata, patients, val_fraction, seed + k, table)
            out.append(Fold(k, train, val, test))
    check_folds(out, table)
    return out


def check_folds(folds: list[Fold], table: LabelTable) -> None:
    """A :class:`LabelsError` when a patient is on two sides of a fold or in the test sets of two folds
    (a split column can ask for that; generated folds never do), or a fold lacks train or val slides."""
    patients = np.asarray(table.patient_ids)
    seen_test: dict[str, int] = {}
    for f in folds:
        sides = {name: {str(p) for p in patients[getattr(f, name)]} for name in ("train", "val", "test")}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sides[a] & sides[b]
            if shared:
                raise LabelsError(
                    f"patient {sorted(shared)[0]!r} has slides in both {a} and {b} (fold {f.index})",
                    path=table.path,
                    fix="put all slides of a patient in the same split",
                )
        if not len(f.train) or not len(f.val):
            raise LabelsError(
                f"fold {f.index} has no {'training' if not len(f.train) else 'validation'} slides",
                path=table.path,
                fix="label more patients or use fewer folds",
            )
        for p in sides["test"]:
            if p in seen_test:
                raise LabelsError(
                    f"patient {p!r} is in the test sets of folds {seen_test[p]} and {f.index}",
                    path=table.path,
                    fix="put all slides of a patient in the same fold",
                )
            seen_test[p] = f.index


def fold_warnings(folds: list[Fold], table: LabelTable) -> list[str]:
    """A warning for each fold whose test slides lack a class (classification) or an event (survival): its
    AUC or concordance is undefined and left out, and balanced accuracy and F1 describe the classes present."""
    out = []
    where = "the split column's test slides" if table.split is not None else "the test slides of fold {k}"
    for f in folds:
        test = where.format(k=f.index)
        if table.task == "survival":
            if not int(table.events[f.test].sum()):  # type: ignore[index]
                out.append(f"{table.path}: {test} have no event, so their concordance is undefined and left out")
        elif table.classes is not None:
            present = set(table.targets[f.test].tolist())
            absent = [c for i, c in enumerate(table.classes) if i not in present]
            if absent:
                out.append(
                    f"{table.path}: {test} have no slide of class {', '.join(repr(c) for c in absent)}, so their "
                    "AUC is undefined and left out and balanced accuracy and F1 describe the other classes only"
                )
    return out


def _check_split_classes(table: LabelTable, train: np.ndarray) -> None:
    """Every class needs training slides in a split column's train rows (a class seen only in test is never learnt)."""
    if table.classes is None:
        return
    present = set(table.targets[train].tolist())
    absent = [c for i, c in enumerate(table.classes) if i not in present]
    if absent:
        raise LabelsError(
            f"class {absent[0]!r} has no slide marked train in the split column, so no model can learn it",
            path=table.path,
            fix="mark some slides of every class train, or leave the class out",
        )


def _carve(
    rows: np.ndarray, strata: np.ndarray, patients: np.ndarray, fraction: float, seed: int, table: LabelTable
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (train, val) by patient, stratified, with about ``fraction`` in val."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, int(round(1 / fraction)))
    n_patients = len(set(patients[rows]))
    if n_patients < 2:
        raise LabelsError(
            "too few training patients to hold some out for validation",
            path=table.path,
            fix="label more patients, or give val slides in the split column",
        )
    per_class = np.bincount(strata[rows])
    n_splits = max(2, min(n_splits, n_patients, int(per_class.max())))
    import warnings

    from sklearn.model_selection import GroupKFold

    with warnings.catch_warnings():  # small classes: sklearn warns, the split is still by patient
        warnings.simplefilter("ignore", UserWarning)
        try:
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            keep, val = next(splitter.split(np.zeros(len(rows)), strata[rows], patients[rows]))
        except ValueError:  # too few patients per class to stratify
            keep, val = next(GroupKFold(n_splits=n_splits).split(np.zeros(len(rows)), groups=patients[rows]))
    return np.sort(rows[keep]), np.sort(rows[val])


def _strata(table: LabelTable) -> np.ndarray:
    """Class index, the event (survival: folds stratified by event), or the quintile of a regression or
    proportion target."""
    if table.task == "survival":
        return table.events.astype(np.int64)  # type: ignore[union-attr]
    if table.classes is not None:
        return table.targets.astype(np.int64)
    t = table.targets
    edges = np.unique(np.quantile(t, [0.2, 0.4, 0.6, 0.8]))
    return np.searchsorted(edges, t, side="right")


def _check_class_patients(table: LabelTable, folds: int, option: str) -> None:
    if table.task == "survival":
        n = len(set(np.asarray(table.patient_ids)[table.events == 1]))
        if n < folds:
            raise LabelsError(
                f"{n} patient(s) have an event, fewer than the {folds} folds",
                path=table.path,
                fix=f"pass {option} {max(2, n)} or label more patients with events",
            )
        return
    if table.classes is None:
        return
    patients = np.asarray(table.patient_ids)
    for c, name in enumerate(table.classes):
        n = len(set(patients[table.targets == c]))
        if n < folds:
            raise LabelsError(
                f"class {name!r} has {n} patient(s), fewer than the {folds} folds",
                path=table.path,
                fix=f"pass {option} {max(2, n)} or label more patients of that class",
            )
