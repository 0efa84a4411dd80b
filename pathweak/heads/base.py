"""What every head shares: the output type, the base class, the registry and the factory.

A head is a pure ``torch.nn.Module`` (no I/O) mapping one bag of tile features (N, D) to a
:class:`HeadOutput`. It may also use the tiles' (row, col) grid positions and, while training, the
bag's target (CLAM's instance clustering). Its training loss is :meth:`MILHead.loss`, so a training loop
needs nothing head-specific: build any registered head with :func:`create_head`, call it, call its loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from .registry import HEADS, WRAPPERS, create_head, head_info, register_head  # noqa: F401  (the heads' modules use register_head from here)

Criterion = Any  # a callable (logits (B, C), targets (B,)) -> scalar loss


@dataclass
class HeadOutput:
    """What a head returns for one bag.

    ``logits`` (C,): slide-level outputs (C classes, or 1 for regression). ``instance_logits`` (N, C):
    per-tile outputs on the same scale (softmax over classes gives per-tile probabilities; for regression
    they are per-tile predictions). ``attention`` (N, A) or None: weights over the tiles summing to 1 per
    column (A = 1, or one column per class for multi-branch heads). ``aux``: head-specific tensors its
    :meth:`MILHead.loss` uses (CLAM's instance loss, DSMIL's max-instance logits). ``tile_scores``: extra
    named per-tile scores (N,) that prediction writes into the results store under their names (INS's
    ``pseudo_label``, the thresholded ``mask`` of INS and WSSeg).
    """

    logits: torch.Tensor
    instance_logits: torch.Tensor
    attention: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    tile_scores: dict[str, torch.Tensor] = field(default_factory=dict)


class GridBox(NamedTuple):
    """A bag's tile-grid positions as known on the host: the shape of their bounding box and whether every
    tile has a cell of its own. Computed once per bag before training, so a head laying tiles out on the
    grid asks the device nothing in a training step. (A named tuple: Lightning passes batches through.)"""

    shape: tuple[int, ...]
    distinct: bool

    @classmethod
    def of(cls, grid: Any) -> GridBox:
        """The box of a (n, 2) or (n, 3) grid (a numpy array or a tensor, copied to the host)."""
        import numpy as np

        g = np.asarray(grid.cpu() if isinstance(grid, torch.Tensor) else grid, dtype=np.int64)
        if len(g) == 0:
            return cls((0,) * (g.shape[1] if g.ndim == 2 else 2), True)
        g = g - g.min(0)
        shape = tuple(int(v) + 1 for v in g.max(0))
        return cls(shape, len(np.unique(np.ravel_multi_index(g.T, shape))) == len(g))


class MILHead(nn.Module):
    """Base class of the heads: ``forward(x, grid=None, target=None) -> HeadOutput``.

    ``in_dim`` is the feature size, ``n_outputs`` the number of classes (1 for regression); subclasses
    take their own keyword options, which are stored in ``self.options`` so a packaged model can be
    rebuilt with :func:`create_head`. The ``target`` a head's forward gets while training is the bag's
    target on the host (a CPU tensor), so reading it costs no device synchronisation; its
    :meth:`loss` gets the target on the device.

    A head with ``tracks_instances = True`` keeps per-tile state across epochs (INS's smoothed
    pseudo-targets): the training loop then also passes ``bag_id=`` (the bag's row in the FeatureBank).
    A head with ``takes_box = True`` also gets ``box=`` (the bag's :class:`GridBox`) while training.
    ``label_augmentation = False``: the head cannot train on joint (class x view) labels (heads/sla.py).
    A head with ``takes_instance_labels = True`` also gets ``instance_labels=`` (tile rows and class indices of
    a reviewer's corrected tiles, on the bag's device) while training a bag that has some: INS lets them
    override its pseudo-labels. Every head's corrected tiles also get the training loop's instance-label loss
    on their ``instance_logits`` (train/instance_labels.py), so a head needs nothing to learn from them.
    """

    name = "?"
    uses_grid = False
    tracks_instances = False
    takes_box = False
    label_augmentation = True
    takes_instance_labels = False

    def __init__(self, in_dim: int, n_outputs: int, **options: Any):
        super().__init__()
        if in_dim < 1 or n_outputs < 1:
            raise ConfigError(f"a head needs in_dim >= 1 and n_outputs >= 1, got {in_dim} and {n_outputs}")
        self.in_dim = in_dim
        self.n_outputs = n_outputs
        self.options = options

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, out: HeadOutput, target: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        """Training loss of one bag: the task criterion on the slide logits (heads add their own terms)."""
        return criterion(out.logits.unsqueeze(0), target.view(1))


def projection(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """The input layer every head starts with: Linear → ReLU → Dropout (CLAM's ``fc``)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


def otsu_level(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D tensor (the level maximising the between-class variance of a histogram)."""
    v = values.detach().float().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-6:
        return hi
    hist = torch.histc(v, bins, lo, hi).double()
    centres = lo + (torch.arange(bins, dtype=torch.float64, device=v.device) + 0.5) * (hi - lo) / bins
    w0 = hist.cumsum(0)
    w1 = w0[-1] - w0
    s0 = (hist * centres).cumsum(0)
    m0 = s0 / w0.clamp_min(1e-12)
    m1 = (s0[-1] - s0) / w1.clamp_min(1e-12)
    between = (w0 * w1 * (m0 - m1) ** 2)[:-1]
    return lo + (int(between.argmax()) + 1) * (hi - lo) / bins


def check_threshold(threshold: float | str) -> None:
    """A mask threshold is ``"otsu"`` or a level in [0, 1] (a clear error otherwise)."""
    if threshold == "otsu" or (
        isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 <= threshold <= 1
    ):
        return
    raise ConfigError(
        f"threshold must be 'otsu' or a level in [0, 1], got {threshold!r}", fix="e.g. --head-opt threshold=otsu"
    )


def foreground_mask(prob: torch.Tensor, slide_positive: bool, threshold: float | str) -> torch.Tensor:
    """Per-tile 0/1 mask from the per-tile probability of a positive class: ``prob >= threshold``, or with
    ``"otsu"``: Otsu's level of the slide's tiles when the slide is predicted positive, 0.5 otherwise."""
    if threshold == "otsu":
        level = otsu_level(prob) if slide_positive and len(prob) > 1 else 0.5
    else:
        level = float(threshold)
    return (prob >= level).float()


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018): ``w·(tanh(V h) ⊙ sigmoid(U h))``, one column per branch."""

    def __init__(self, dim: int, attn_dim: int, branches: int = 1, dropout: float = 0.0):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(attn_dim, branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Raw scores (N, branches); softmax over N gives the attention."""
        return self.w(self.v(h) * self.u(h))
