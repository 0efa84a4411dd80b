"""Inference of one bag with a trained head: slide probabilities (or the regression prediction on the
target's scale), per-tile probabilities and attention. Used by evaluation, ``pathweak predict`` and
the benchmarks, always in float32 and eval mode so results do not depend on the training precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..heads import MILHead

if TYPE_CHECKING:
    from ..protocols import BagSource


@dataclass
class BagPrediction:
    """``slide`` (C,) class probabilities, or (1,) the regression prediction, the survival risk or the
    predicted proportion; ``instance`` (N, C) the same per tile (for proportion: each tile's positive
    probability); ``attention`` (N, A) or None; ``extra``: the head's named per-tile scores (N,) such as
    ``pseudo_label`` or ``mask`` (:attr:`~pathweak.heads.HeadOutput.tile_scores`)."""

    slide: np.ndarray
    instance: np.ndarray
    attention: np.ndarray | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def predict_bag(
    head: MILHead,
    x: torch.Tensor,
    grid: torch.Tensor | None,
    task: str,
    target_scale: tuple[float, float] | None = None,
) -> BagPrediction:
    """Run ``head`` on one bag (features (N, D) on the head's device)."""
    head.eval()
    with torch.inference_mode():
        out = head(x.float(), grid)
        if task == "survival":  # risk: the log hazard (Cox) or minus the expected survival (time bins)
            from .survival import risk_from_logits

            slide = risk_from_logits(out.logits.float())[None]
            inst = risk_from_logits(out.instance_logits.float())[:, None]
        elif task == "proportion":  # per-tile positive probability; the slide's share is their mean
            inst = torch.sigmoid(out.instance_logits[:, :1].float())
            slide = inst.mean(0)
        elif task == "regression":
            mean, std = target_scale or (0.0, 1.0)
            slide = out.logits.float() * std + mean
            inst = out.instance_logits.float() * std + mean
        else:
            slide = torch.softmax(out.logits.float(), dim=-1)
            inst = torch.softmax(out.instance_logits.float(), dim=-1)
        attn = None if out.attention is None else out.attention.float().cpu().numpy()
        extra = {k: v.float().cpu().numpy() for k, v in out.tile_scores.items()}
    return BagPrediction(slide.cpu().numpy(), inst.cpu().numpy(), attn, extra)


def predict_rows(
    head: MILHead, bank: BagSource, rows: np.ndarray, task: str, target_scale: tuple[float, float] | None = None
) -> np.ndarray:
    """Slide-level outputs (len(rows), C) of bank rows."""
    return (
        np.stack([predict_bag(head, bank.bag(int(i)), bank.grid(int(i)), task, target_scale).slide for i in rows])
        if len(rows)
        else np.zeros((0, 1 if task in ("survival", "proportion") else head.n_outputs), np.float32)
    )
