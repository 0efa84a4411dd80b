"""Learning from label proportions (``--task proportion``): the label of a slide is the share, in [0, 1],
of its tiles that are positive (tumour cellularity, a TIL score, the share of a tissue class).

The head has one output; the sigmoid of its per-tile output is the tile's probability of being
positive, and the slide's predicted proportion is the mean of these over its tiles. The loss is the
bag-level cross-entropy between the true proportion ``p`` and that mean ``p_hat`` (DLLP, Ardehaly &
Culotta 2017; the "proportion loss" of the LLP literature): ``-(p log p_hat + (1 - p) log(1 - p_hat))``,
minimal exactly at ``p_hat = p``. Any head works: only its per-tile outputs are used (ABMIL's and CLAM's
slide classifier applied to each tile, DSMIL's instance classifier, WSSeg's class activation map).
Prediction writes the per-tile probability as ``prob_positive`` (like the ``prob_<class>`` scores of the
instance heads), so heatmaps and QuPath exports read it unchanged.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def bag_proportion(instance_logits: torch.Tensor) -> torch.Tensor:
    """Mean per-tile positive probability of one bag (a scalar tensor)."""
    return torch.sigmoid(instance_logits[:, 0].float()).mean()


def proportion_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bag-level cross-entropy between true shares ``target`` (B,) and predicted shares ``predicted``
    (B,), mean over the bags."""
    p_hat = predicted.float().clamp(EPS, 1 - EPS)
    p = target.float()
    return -(p * torch.log(p_hat) + (1 - p) * torch.log1p(-p_hat)).mean()
