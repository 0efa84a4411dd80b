"""Pooling heads: the mean and max baselines and ABMIL (gated attention pooling, Ilse et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from .base import GatedAttention, HeadOutput, MILHead, projection, register_head


@register_head("mean")
class MeanPooling(MILHead):
    """Mean of the projected tile features, then a linear classifier (baseline)."""

    def __init__(self, in_dim: int, n_outputs: int, *, hidden: int = 256, dropout: float = 0.25):
        super().__init__(in_dim, n_outputs, hidden=hidden, dropout=dropout)
        self.fc = projection(in_dim, hidden, dropout)
        self.classifier = nn.Linear(hidden, n_outputs)

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:
        h = self.fc(x)
        inst = self.classifier(h)  # the classifier is linear, so the slide logit is the mean of these
        return HeadOutput(self.classifier(h.mean(0)), inst)


@register_head("max")
class MaxPooling(MeanPooling):
    """A per-tile classifier whose highest score per class is the slide's (instance max pooling baseline)."""

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:
        inst = self.classifier(self.fc(x))
        return HeadOutput(inst.max(0).values, inst)


@register_head("abmil")
class ABMIL(MILHead):
    """Gated attention MIL (Ilse et al. 2018): attention-weighted mean of the tiles, then a classifier."""

    def __init__(self, in_dim: int, n_outputs: int, *, hidden: int = 256, attn_dim: int = 128, dropout: float = 0.25):
        super().__init__(in_dim, n_outputs, hidden=hidden, attn_dim=attn_dim, dropout=dropout)
        self.fc = projection(in_dim, hidden, dropout)
        self.attention = GatedAttention(hidden, attn_dim, 1, dropout)
        self.classifier = nn.Linear(hidden, n_outputs)

    def pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(slide embedding (hidden,): the attention-weighted sum of the embedded tiles, attention (N, 1),
        embedded tiles (N, hidden)); the embedding is what FEATHER's slide feature is."""
        h = self.fc(x)
        a = torch.softmax(self.attention(h), dim=0)  # (N, 1)
        return (a * h).sum(0), a, h

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:
        pooled, a, h = self.pool(x)
        return HeadOutput(self.classifier(pooled), self.classifier(h), a)
