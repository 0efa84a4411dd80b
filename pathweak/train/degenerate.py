"""Fold models that learned nothing, and the rule that keeps them out of a run's ensemble.

A run's predictions average its fold models (``predict_slides`` on the run folder). One model that
predicts nearly the same for every slide pulls every average towards its constant: with nine members,
one stuck at 0.35 turns every confident tumour slide into 0.93 and every normal one into 0.04. Such a
model is recognised on the slides it was trained on, where any model that learned something fits well:

**Rule.** A fold model is *degenerate* when its kept weights fit its own training slides no better than
the best constant prediction: for classification, its class-balanced cross-entropy on them is at least
ln(K) (K classes; with every class weighted equally no constant does better than 1/K each); for
regression, its mean squared error on the standardised training targets is at least 1 (the training
mean's). Survival and proportion models are not assessed. A run records every fold's check in
run.json (``seeds.<seed>.folds[].fit_check``), leaves degenerate models out of the ensemble
(``ensemble.excluded``; all are kept, with a warning, when every model is degenerate) and warns.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..protocols import FeatureBankLike
    from .config import TrainConfig
    from .fit import FitResult
    from .labels import LabelTable
    from .splits import Fold

RULE = (
    "a fold model is degenerate when its kept weights fit its own training slides no better than the best "
    "constant prediction (class-balanced cross-entropy >= ln K for K classes; regression: mean squared error of "
    "the standardised target >= 1); degenerate models are left out of the averaged predictions"
)


def fit_check(task: str, classes: list[str] | None, targets: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    """The rule on one model's slide outputs for its training slides (class probabilities, or the
    prediction for regression) and their targets: ``{"loss", "constant_loss", "degenerate"}``, or
    ``{"assessed": False}`` for the tasks the rule does not cover."""
    if len(targets) == 0 or task in ("survival", "proportion"):
        return {"assessed": False}
    if classes is not None:
        probs = np.clip(np.asarray(outputs, np.float64), 1e-12, 1.0)
        y = np.asarray(targets, np.int64)
        present = np.unique(y)
        loss = float(np.mean([-np.log(probs[y == c, c]).mean() for c in present]))
        constant = math.log(len(present)) if len(present) > 1 else 0.0
    else:
        t = np.asarray(targets, np.float64)
        std = float(t.std()) or 1.0
        loss = float(np.mean(((np.asarray(outputs, np.float64)[:, 0] - t) / std) ** 2))
        constant = 1.0
    return {"loss": round(loss, 6), "constant_loss": round(constant, 6), "degenerate": bool(loss >= constant)}


def ensemble_members(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which of a run's models (``seed<S>_fold<F>`` -> its fit check) the ensemble averages: every model
    but the degenerate ones, or all of them (with a warning) when every model is degenerate."""
    bad = sorted(name for name, check in folds.items() if check.get("degenerate"))
    members = sorted(name for name in folds if name not in bad) or sorted(folds)
    excluded = [name for name in bad if name not in members]
    warnings = []
    if excluded:
        warnings.append(
            f"fold model(s) {', '.join(excluded)} learned nothing (no better than a constant on their own training "
            "slides); left out of the averaged predictions"
        )
    elif bad:
        warnings.append(
            "every fold model learned nothing (no better than a constant on its own training slides); the averaged "
            "predictions are as uninformative"
        )
    return {"rule": RULE, "members": members, "excluded": excluded, "degenerate": bad, "warnings": warnings}


def fold_check(fit: FitResult, bank: FeatureBankLike, table: LabelTable, fold: Fold) -> dict[str, Any]:
    """:func:`fit_check` of a fold's trained head on its own training slides."""
    if table.task in ("survival", "proportion"):
        return {"assessed": False}
    from .infer import predict_rows

    outputs = predict_rows(fit.head, bank, fold.train, table.task, fit.target_scale)
    return fit_check(table.task, table.classes, table.targets[fold.train], outputs)


def fold_line(fit: FitResult, cfg: TrainConfig, check: dict[str, Any] | None = None) -> str:
    """One (seed, fold) of a training run, for a log; a degenerate model says so."""
    flag = " DEGENERATE (no better than a constant on its training slides)" if (check or {}).get("degenerate") else ""
    return (
        f"train {cfg.head} seed {fit.seed} fold {fit.fold}: kept epoch {fit.best_epoch} of {fit.epochs}, "
        f"validation loss {fit.best_val_loss:.3g}, {fit.seconds:.1f} s{flag}"
    )
