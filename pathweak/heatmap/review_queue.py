"""The review queue's rule (docs/review.md): which tiles of a slide one correction should teach the model
most, and the class each tile is shown with. Pure numpy on a slide's per-tile scores.

With ``p`` the probability of any class other than the negative one and each tile's shown class, two orders
of the slide's tiles take turns:

1. **most positive first** (``p`` descending): where a slide's little tumour is, and the worst false
   positives beside it; corrections there anchor the tumour class;
2. **the line the model draws**: nearest first to the rank where the shown classes switch (``1 - q`` of the
   way up the ranking, ``q`` the share of tiles shown with a non-negative class) — the least certain calls,
   measured against the model's own decision rather than against p = 0.5, so heads whose probabilities are
   not calibrated (an attention head's tile scores can all lie near 0.5) are served too.

A tile's place is its best place in either (first of 1, first of 2, second of 1, ...), and
``priority = 1 - place / (orders x tiles)``. On a slide whose known label is not the predicted class, an
attention head's attention order (most attended first) joins as the first order: the tiles that drove the
wrong call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SlideReview:
    """One slide's review: each tile's shown class (index into the classes), positive probability and
    priority, and the queue (tile indices, highest priority first)."""

    classes: np.ndarray
    positive: np.ndarray
    priority: np.ndarray
    queue: np.ndarray


def class_probabilities(scores: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """(N, C) per-tile class probabilities from the named score columns (``prob_<class>``)."""
    missing = [n for n in names if n not in scores]
    if missing:
        raise KeyError(f"no score {', '.join(missing)} (scores: {', '.join(scores)})")
    return np.column_stack([np.asarray(scores[n], np.float64) for n in names])


def tile_classes(
    prob: np.ndarray, negative: int, pseudo_label: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """The class each tile is shown with: its ``pseudo_label`` (INS) when given; else its ``mask`` (INS, wsseg:
    1 is the most likely class other than the negative one, 0 the negative class); else the most likely class."""
    if pseudo_label is not None:
        return np.nan_to_num(pseudo_label, nan=negative).astype(np.int64)
    if mask is not None:
        others = prob.copy()
        others[:, negative] = -np.inf
        return np.where(np.nan_to_num(mask) >= 0.5, others.argmax(1), negative).astype(np.int64)
    return np.nan_to_num(prob, nan=-1.0).argmax(1).astype(np.int64)


def scaled_rank(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (0 the lowest; ties share their mean rank; one tile: 0)."""
    from scipy.stats import rankdata

    v = np.nan_to_num(np.asarray(values, np.float64), nan=-np.inf)
    return (rankdata(v) - 1) / max(len(v) - 1, 1)


def review_priority(
    prob: np.ndarray,
    negative: int,
    shown: np.ndarray | None = None,
    attention: np.ndarray | None = None,
    mispredicted: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(priority, positive probability) of each tile by the module's rule; ``shown``: the class each tile is
    shown with (default: the most likely one)."""
    p = np.clip(1.0 - np.nan_to_num(prob[:, negative], nan=1.0), 0.0, 1.0)
    if len(p) == 0:
        return p.copy(), p
    if shown is None:
        shown = tile_classes(prob, negative)
    rank = scaled_rank(p)
    q = float(np.mean(shown != negative))
    n = len(p)
    by_p = np.lexsort((-p, -rank))
    orders = [by_p, np.lexsort((-p, np.abs(rank - (1.0 - q))))]
    if mispredicted and attention is not None:  # the tiles that drove the wrong call, first
        orders.insert(0, np.lexsort((-p, -np.nan_to_num(np.asarray(attention, np.float64), nan=-np.inf))))
    m = len(orders)
    position = np.full(n, m * n, np.int64)
    for k, order in enumerate(orders):  # position m*i + k: order k's i-th tile; its best position counts
        position[order] = np.minimum(position[order], m * np.arange(n) + k)
    return 1.0 - position / float(m * n), p


def review_queue(priority: np.ndarray, positive: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """The ``n`` tiles of highest priority (ties: higher positive probability first), leaving out ``exclude``."""
    order = np.lexsort((-positive, -priority))
    if exclude is not None and len(exclude):
        order = order[~np.isin(order, exclude)]
    return order[: max(int(n), 0)]


def review_slide(
    prob: np.ndarray,
    negative: int,
    n: int,
    *,
    attention: np.ndarray | None = None,
    pseudo_label: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    mispredicted: bool = False,
    exclude: np.ndarray | None = None,
) -> SlideReview:
    """The review of one slide from its per-tile class probabilities (N, C) and optional head scores."""
    shown = tile_classes(prob, negative, pseudo_label, mask)
    priority, positive = review_priority(prob, negative, shown, attention, mispredicted)
    return SlideReview(shown, positive, priority, review_queue(priority, positive, n, exclude))
