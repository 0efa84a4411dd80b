"""RankMe (Garrido et al. 2023): the effective rank of a batch of embeddings, a label-free measure of
representation quality used to log progress and select checkpoints."""

from __future__ import annotations

import torch


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """exp(entropy of the normalised singular values) of an (n, D) embedding matrix; 1 <= r <= min(n, D)."""
    z = embeddings.float()
    s = torch.linalg.svdvals(z)
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
