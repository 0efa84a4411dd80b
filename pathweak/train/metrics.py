"""Slide-level metrics (scikit-learn), patient-level bootstrap 95% confidence intervals and the spread
across seeds.

Classification: AUC (binary: of the positive class, the last; multi-class: macro one-vs-rest), balanced
accuracy and F1 (binary: of the positive class; multi-class: macro) of the arg-max prediction.
Regression: R² and MAE (and Pearson r).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Metrics = dict[str, float]


def classification_metrics(y: np.ndarray, prob: np.ndarray) -> Metrics:
    """``y`` class indices (n,), ``prob`` class probabilities (n, C)."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    y = np.asarray(y, np.int64)
    prob = np.asarray(prob, np.float64)
    n_classes = prob.shape[1]
    pred = prob.argmax(1)
    out: Metrics = {"auc": math.nan}
    present = np.unique(y)
    if len(present) > 1:
        if n_classes == 2:
            out["auc"] = float(roc_auc_score(y, prob[:, 1]))
        elif len(present) == n_classes:
            p = prob / prob.sum(1, keepdims=True)
            out["auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(n_classes))))
    out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
    average = "binary" if n_classes == 2 else "macro"
    out["f1"] = float(f1_score(y, pred, average=average, labels=list(range(n_classes)) if average == "macro" else None,
                               zero_division=0))
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Metrics:
    from sklearn.metrics import mean_absolute_error, r2_score

    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64).reshape(-1)
    r = float(np.corrcoef(y, pred)[0, 1]) if len(y) > 1 and y.std() > 0 and pred.std() > 0 else math.nan
    return {"r2": float(r2_score(y, pred)) if len(y) > 1 else math.nan, "mae": float(mean_absolute_error(y, pred)),
            "pearson_r": r}


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], Metrics],
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every metric of ``metric_fn(y, scores)``, resampling
    ``groups`` (patients; slides when None) with replacement. Resamples where a metric is undefined
    (one class only) are skipped for that metric."""
    y, scores = np.asarray(y), np.asarray(scores)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n):
        pick = np.concatenate([members[g] for g in rng.integers(len(uniq), size=len(uniq))])
        for name, value in metric_fn(y[pick], scores[pick]).items():
            if not math.isnan(value):
                samples.setdefault(name, []).append(value)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {name: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for name, v in samples.items()}


def spread(values: list[Metrics]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of each metric over runs (e.g. seeds)."""
    out: dict[str, dict[str, float]] = {}
    for name in values[0] if values else []:
        v = np.array([m[name] for m in values], np.float64)
        v = v[~np.isnan(v)]
        if len(v):
            out[name] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                         "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
    return out
