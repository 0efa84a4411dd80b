"""Slide-level metrics, patient-level bootstrap 95% confidence intervals and the spread
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
    """``y`` class indices (n,), ``prob`` class probabilities (n, C). Vectorised numpy (the bootstrap calls
    it a thousand times); tests check it equals scikit-learn's ``roc_auc_score``,
    ``balanced_accuracy_score`` and ``f1_score``."""
    y = np.asarray(y, np.int64)
    prob = np.asarray(prob, np.float64)
    n_classes = prob.shape[1]
    pred = prob.argmax(1)
    if n_classes == 2:
        auc = binary_auc(y == 1, prob[:, 1])
    else:
        per_class = [binary_auc(y == c, prob[:, c]) for c in range(n_classes)]
        auc = float(np.mean(per_class)) if not np.isnan(per_class).any() else math.nan
    present = np.unique(y)
    recall = [np.mean(pred[y == c] == c) for c in present]
    f1 = [_f1(y == c, pred == c) for c in range(n_classes)]
    return {
        "auc": auc,
        "balanced_accuracy": float(np.mean(recall)) if len(recall) else math.nan,
        "f1": f1[1] if n_classes == 2 else float(np.mean(f1)),
    }


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class only."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum(truth & pred))
    denom = 2 * tp + float(np.sum(~truth & pred)) + float(np.sum(truth & ~pred))
    return 2 * tp / denom if denom else 0.0


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Metrics:
    """R² (NaN for a constant target), mean absolute error and Pearson r."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64).reshape(-1)
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    r2 = 1 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else math.nan
    r = float(np.corrcoef(y, pred)[0, 1]) if len(y) > 1 and y.std() > 0 and pred.std() > 0 else math.nan
    return {"r2": r2, "mae": float(np.mean(np.abs(y - pred))) if len(y) else math.nan, "pearson_r": r}


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
            out[name] = {
                "mean": float(v.mean()),
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "min": float(v.min()),
                "max": float(v.max()),
                "n": int(len(v)),
            }
    return out
