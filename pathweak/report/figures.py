"""The report's figures, drawn with matplotlib (Agg, no display) and saved as PNGs: ROC and PR curves
with patient-bootstrap bands, calibration, confusion matrix, Kaplan-Meier curves of predicted risk
groups with the log-rank p-value, predicted vs true scatter, and training curves per fold. Each function
takes plain arrays and a path, and returns the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GRID = np.linspace(0, 1, 101)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from .._atomic import atomic_file

    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    _plt().close(fig)
    return path


def _boot_rows(groups: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n`` patient-bootstrap resamples."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[g] for g in rng.integers(len(uniq), size=len(uniq))]) for _ in range(n)]


def roc_pr(y: np.ndarray, score: np.ndarray, groups: np.ndarray, path: Path, label: str, n_boot: int = 200) -> Path:
    """ROC and precision-recall curves of ``score`` for ``y`` (bool), with 95% patient-bootstrap bands."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr, _ = roc_curve(y, score)
    prec, rec, _ = precision_recall_curve(y, score)
    tprs, precs = [], []
    for rows in _boot_rows(groups, n_boot, 0):
        yb, sb = y[rows], score[rows]
        if yb.all() or not yb.any():
            continue
        f, t, _ = roc_curve(yb, sb)
        tprs.append(np.interp(GRID, f, t))
        p, r, _ = precision_recall_curve(yb, sb)
        precs.append(np.interp(GRID, r[::-1], p[::-1]))
    ax1.plot(fpr, tpr, color="C0", label=f"AUC {auc(fpr, tpr):.3f}")
    ax2.plot(rec, prec, color="C1", label=f"AP {auc(rec, prec):.3f}")
    if tprs:
        ax1.fill_between(
            GRID, *np.percentile(tprs, [2.5, 97.5], axis=0), color="C0", alpha=0.2, label="95% bootstrap band"
        )
        ax2.fill_between(
            GRID, *np.percentile(precs, [2.5, 97.5], axis=0), color="C1", alpha=0.2, label="95% bootstrap band"
        )
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax1.set(
        xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {label}", xlim=(0, 1), ylim=(0, 1.02)
    )
    ax2.axhline(float(np.mean(y)), color="k", ls="--", lw=0.8)
    ax2.set(xlabel="recall", ylabel="precision", title=f"Precision-recall: {label}", xlim=(0, 1), ylim=(0, 1.02))
    ax1.legend(loc="lower right", fontsize=8)
    ax2.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def calibration(y: np.ndarray, prob: np.ndarray, path: Path, label: str, bins: int = 10) -> Path:
    """Reliability diagram: observed frequency against mean predicted probability per bin, with counts."""
    plt = _plt()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.5, 5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    xs, ys = [], []
    for b in range(bins):
        m = which == b
        if m.any():
            xs.append(prob[m].mean())
            ys.append(y[m].mean())
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.plot(xs, ys, "o-", color="C2", label="model")
    ax.set(ylabel="observed frequency", title=f"Calibration: {label}", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    hist.hist(prob, bins=edges, color="C2", alpha=0.6)
    hist.set(xlabel="predicted probability", ylabel="slides")
    return _save(fig, path)


def confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], path: Path) -> Path:
    """Confusion matrix (counts; rows the true class)."""
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    cm = confusion_matrix(y, pred, labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return _save(fig, path)


def kaplan_meier_groups(time: np.ndarray, event: np.ndarray, risk: np.ndarray, path: Path) -> tuple[Path, float]:
    """Kaplan-Meier curves of the low- and high-risk halves (split at the median predicted risk) and the
    log-rank p-value between them (scikit-survival)."""
    from ..train.survival import kaplan_meier, logrank_p

    plt = _plt()
    high = risk > np.median(risk)
    p = logrank_p(time, event, high.astype(int))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, mask, color in (("low risk", ~high, "C0"), ("high risk", high, "C3")):
        if mask.any():
            t, s = kaplan_meier(time[mask], event[mask])
            ax.step(
                np.concatenate([[0], t]),
                np.concatenate([[1], s]),
                where="post",
                color=color,
                label=f"{name} (n={int(mask.sum())}, events {int(event[mask].sum())})",
            )
            cens = mask & (event == 0)
            if cens.any():
                at = np.interp(time[cens], t, s, left=1.0)
                ax.plot(time[cens], at, "|", color=color, ms=8)
    ax.set(
        xlabel="time",
        ylabel="survival probability",
        ylim=(0, 1.02),
        title=f"Kaplan-Meier by predicted risk (log-rank p = {p:.2g})",
    )
    ax.legend(fontsize=8)
    return _save(fig, path), p


def scatter(y: np.ndarray, pred: np.ndarray, path: Path, label: str) -> Path:
    """Predicted against true values with the identity line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    pad = 0.05 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.scatter(y, pred, s=18, alpha=0.8, color="C4")
    ax.set(
        xlabel=f"true {label}",
        ylabel=f"predicted {label}",
        title=f"Predicted vs true {label}",
        xlim=(lo - pad, hi + pad),
        ylim=(lo - pad, hi + pad),
    )
    return _save(fig, path)


def training_curves(folds: list[dict[str, Any]], path: Path) -> Path:
    """Train and validation loss per epoch, one panel per (seed, fold); the best epoch marked."""
    plt = _plt()
    n = max(1, len(folds))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, f in zip(axes.ravel(), folds, strict=False):
        h = f.get("history") or []
        ep = [r["epoch"] for r in h]
        ax.plot(ep, [r["train_loss"] for r in h], label="train", color="C0")
        ax.plot(ep, [r["val_loss"] for r in h], label="validation", color="C1")
        if f.get("best_epoch", -1) >= 0:
            ax.axvline(f["best_epoch"], color="k", ls=":", lw=0.8, label="best epoch")
        bad = (f.get("fit_check") or {}).get("degenerate")
        ax.set(xlabel="epoch", ylabel="loss")
        ax.set_title(
            f"seed {f['seed']}, fold {f['fold']}" + (": DEGENERATE" if bad else ""), color="C3" if bad else "k"
        )
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(folds) :]:
        ax.axis("off")
    return _save(fig, path)


def tile_gallery(
    top: np.ndarray, top_scores: np.ndarray, bottom: np.ndarray, bottom_scores: np.ndarray, score: str, path: Path
) -> Path:
    """Two rows of tiles: the highest- and the lowest-scoring, each titled with its score in a size that
    reads at the report's width."""
    plt = _plt()
    k = max(len(top), len(bottom), 1)
    fig, axes = plt.subplots(2, k, figsize=(2.1 * k + 0.6, 5.0), squeeze=False)
    rows = ((top, top_scores, "highest"), (bottom, bottom_scores, "lowest (in tissue)"))
    for r, (tiles, values, name) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(tiles):
                ax.imshow(tiles[c])
                ax.set_title(f"{values[c]:.3g}", fontsize=14)
        axes[r, 0].text(
            -0.08,
            0.5,
            f"{name}\n{score}",
            transform=axes[r, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=12,
        )
    return _save(fig, path)


def overlay_figure(image: np.ndarray, title: str, score: str, vmin: float, vmax: float, path: Path) -> Path:
    """An RGB heatmap overlay at about its own pixel size, with ``title`` above and a viridis colour bar of
    ``score`` from ``vmin`` to ``vmax`` beside it."""
    plt = _plt()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h, w = image.shape[:2]
    dpi = 100
    fig, ax = plt.subplots(figsize=(w / dpi + 1.4, h / dpi + 0.8), dpi=dpi)
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    cbar = fig.colorbar(ScalarMappable(norm=Normalize(vmin, vmax), cmap="viridis"), ax=ax, fraction=0.035, pad=0.01)
    cbar.set_label(score, fontsize=14)
    cbar.ax.tick_params(labelsize=12)
    import textwrap

    ax.set_title(textwrap.fill(title, max(40, int(w / 12))), fontsize=15, loc="left")
    return _save(fig, path)
