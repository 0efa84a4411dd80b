"""DSMIL (Li et al. 2021): dual-stream MIL. Stream 1 is a per-tile classifier whose top tile per class
is the "critical instance"; stream 2 attends over the tiles by similarity to the critical instances
(queries) and classifies the attention-pooled bag. The loss averages both streams: the bag classifier's
and the max-pooled instance classifier's."""

from __future__ import annotations

import torch
from torch import nn

from .base import Criterion, HeadOutput, MILHead, projection, register_head


@register_head("dsmil")
class DSMIL(MILHead):
    """Dual-stream MIL: max-instance stream + attention to the critical instance (Li et al. 2021)."""

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        *,
        hidden: int = 256,
        q_dim: int = 128,
        dropout: float = 0.25,
        passing_v: bool = False,
    ):
        super().__init__(in_dim, n_outputs, hidden=hidden, q_dim=q_dim, dropout=dropout, passing_v=passing_v)
        self.fc = projection(in_dim, hidden, dropout)
        self.instance_classifier = nn.Linear(hidden, n_outputs)
        self.q = nn.Sequential(nn.Linear(hidden, q_dim), nn.ReLU(), nn.Linear(q_dim, q_dim), nn.Tanh())
        self.v = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU()) if passing_v else nn.Identity()
        )
        self.bag_classifier = nn.Conv1d(n_outputs, n_outputs, kernel_size=hidden)
        self.q_dim = q_dim

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> HeadOutput:
        h = self.fc(x)
        inst = self.instance_classifier(h)  # (N, C)
        queries = self.q(h)  # (N, q)
        critical = queries[inst.argmax(0)]  # (C, q): the query of each class's top tile
        a = torch.softmax(queries @ critical.T / self.q_dim**0.5, dim=0)  # (N, C)
        pooled = a.T @ self.v(h)  # (C, hidden)
        logits = self.bag_classifier(pooled[None])[0, :, 0]  # (C,)
        return HeadOutput(logits, inst, a, {"max_logits": inst.max(0).values})

    def loss(self, out: HeadOutput, target: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        bag = criterion(out.logits.unsqueeze(0), target.view(1))
        return 0.5 * bag + 0.5 * criterion(out.aux["max_logits"].unsqueeze(0), target.view(1))
