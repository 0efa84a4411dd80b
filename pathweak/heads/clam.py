"""CLAM (Lu et al. 2021): gated attention pooling plus instance-level clustering of the most and least
attended tiles. CLAM-SB has one attention branch, CLAM-MB one per class.

Instance clustering: for the bag's class, the ``k_sample`` most attended tiles are taught to be "in
class" and the ``k_sample`` least attended "out of class" by a small per-class instance classifier; with
``subtyping`` (default for more than two classes) the other classes' top tiles are taught "out of
class" too. The training loss is ``bag_weight`` x bag loss + (1 - ``bag_weight``) x instance loss.
Regression (one output) has no classes, so no instance clustering.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import Criterion, GatedAttention, HeadOutput, MILHead, projection, register_head


class _CLAM(MILHead):
    branches_per_class = False
    label_augmentation = False  # instance clustering reads every output as a class (heads/sla.py)

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        *,
        hidden: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        subtyping: bool | None = None,
    ):
        super().__init__(
            in_dim,
            n_outputs,
            hidden=hidden,
            attn_dim=attn_dim,
            dropout=dropout,
            k_sample=k_sample,
            bag_weight=bag_weight,
            subtyping=subtyping,
        )
        self.k_sample = k_sample
        self.bag_weight = bag_weight
        self.subtyping = n_outputs > 2 if subtyping is None else subtyping
        self.fc = projection(in_dim, hidden, dropout)
        branches = n_outputs if self.branches_per_class else 1
        self.attention = GatedAttention(hidden, attn_dim, branches, dropout)
        self.instance_classifiers = nn.ModuleList(
            [nn.Linear(hidden, 2) for _ in range(n_outputs if n_outputs > 1 else 0)]
        )
        self._build_classifiers(hidden, n_outputs)

    def _build_classifiers(self, hidden: int, n_outputs: int) -> None:  # pragma: no cover - per variant
        raise NotImplementedError

    def loss(self, out: HeadOutput, target: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        bag = super().loss(out, target, criterion)
        if "instance_loss" not in out.aux:
            return bag
        return self.bag_weight * bag + (1 - self.bag_weight) * out.aux["instance_loss"]

    def _instance_loss(self, attention: torch.Tensor, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """CLAM's clustering loss; ``attention`` (N, branches); ``target`` on the host (no device sync)."""
        k = min(self.k_sample, h.shape[0] // 2)
        if k < 1 or not self.instance_classifiers:
            return None
        label = int(target)
        total = h.new_zeros(())
        for c, classifier in enumerate(self.instance_classifiers):
            a = attention[:, c if attention.shape[1] > 1 else 0]
            top = torch.topk(a, k).indices
            if c == label:
                bottom = torch.topk(-a, k).indices
                inst = torch.cat([h[top], h[bottom]])
                targets = (torch.arange(2 * k, device=h.device) < k).long()  # k ones, k zeros: made on the device
            elif self.subtyping:
                inst, targets = h[top], torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            total = total + F.cross_entropy(classifier(inst), targets)
        return total / len(self.instance_classifiers) if self.subtyping else total


@register_head("clam_sb")
class CLAMSB(_CLAM):
    """CLAM single branch: one gated attention over the tiles plus instance clustering (Lu et al. 2021)."""

    def _build_classifiers(self, hidden: int, n_outputs: int) -> None:
        self.classifier = nn.Linear(hidden, n_outputs)

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:
        h = self.fc(x)
        a = torch.softmax(self.attention(h), dim=0)  # (N, 1)
        out = HeadOutput(self.classifier((a * h).sum(0)), self.classifier(h), a)
        if target is not None and self.training:
            loss = self._instance_loss(a, h, target)
            if loss is not None:
                out.aux["instance_loss"] = loss
        return out


@register_head("clam_mb")
class CLAMMB(_CLAM):
    """CLAM multi-branch: one attention branch and one classifier per class plus instance clustering."""

    branches_per_class = True

    def _build_classifiers(self, hidden: int, n_outputs: int) -> None:
        self.classifiers = nn.ModuleList([nn.Linear(hidden, 1) for _ in range(n_outputs)])

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:
        h = self.fc(x)
        a = torch.softmax(self.attention(h), dim=0)  # (N, C)
        pooled = a.T @ h  # (C, hidden): one pooled feature per class
        logits = torch.cat([clf(pooled[c]) for c, clf in enumerate(self.classifiers)])
        inst = torch.cat([clf(h) for clf in self.classifiers], dim=1)
        out = HeadOutput(logits, inst, a)
        if target is not None and self.training:
            loss = self._instance_loss(a, h, target)
            if loss is not None:
                out.aux["instance_loss"] = loss
        return out
