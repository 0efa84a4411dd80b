"""Feature distillation: a small timm ViT (the student) learns to reproduce a frozen teacher encoder's
embedding and, for ViT teachers, its patch tokens, on augmented views of the TileStores' tiles.

The loss (``cfg.distill_loss``) compares linear projections of the student's features (student dim ->
teacher dim) with the teacher's, for the image embedding and for the token map (the teacher's map pooled
or interpolated to the student's grid):

- ``standardized`` (default): MSE to the teacher's features standardised per dimension over the batch
  (zero mean, unit variance), so every teacher direction counts alike and a few high-variance ones cannot
  drown the low-variance, discriminative rest (feature normalisation of the targets as in BYOL-style and
  feature-distillation practice: Wei et al. 2022, "Contrastive learning rivals masked image modeling in
  fine-tuning via feature distillation"; Miles & Mikolajczyk 2024, "Understanding the role of the
  projector in knowledge distillation").
- ``cosine``: cosine distance plus a scale-free L2 (MSE over the target's mean square), ``l2_weight``.

``relation_weight`` > 0 adds similarity-preserving distillation (Tung & Mori 2019): the batch's
cosine-similarity matrix of the student's own embedding matches that of the standardised teacher
embedding.
Training runs through :func:`pathweak.ssl.train.pretrain` (``method="distill"``): same Lightning module,
schedules, time budget, resume, RankMe and export; the written ``pathweak:`` encoder records its teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..encoders.base import Encoder


def load_teacher(cfg: Any) -> Encoder:
    """The frozen teacher :class:`~pathweak.encoders.Encoder` named by ``cfg.teacher``."""
    from ..encoders import create_encoder

    teacher = create_encoder(cfg.teacher, cfg.teacher_weights)
    if teacher.info.input != "rgb":
        raise ConfigError(
            f"the teacher {cfg.teacher} embeds 3D volume patches; distillation trains a 2D ViT",
            fix="use a 2D teacher (pathweak:<dir> of a 2D run, timm:..., a preset)",
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def match_loss(pred: torch.Tensor, target: torch.Tensor, l2_weight: float) -> torch.Tensor:
    """Cosine distance + ``l2_weight`` * MSE / mean(target^2), over the last dimension."""
    cos = 1 - F.cosine_similarity(pred, target, dim=-1).mean()
    l2 = F.mse_loss(pred, target) / target.pow(2).mean().clamp_min(1e-6)
    return cos + l2_weight * l2


def standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x`` (..., D) with every dimension at zero mean and unit variance over all leading positions."""
    flat = x.reshape(-1, x.shape[-1])
    return (x - flat.mean(0)) / (flat.var(0, unbiased=False) + eps).sqrt()


def standardized_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between ``pred`` and the per-dimension standardised ``target`` (last dimension = features)."""
    return F.mse_loss(pred, standardize(target))


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving loss: mean squared difference of the (B, B) cosine-similarity matrices of the
    student's embedding and the standardised teacher embedding."""
    s = F.normalize(student, dim=-1)
    t = F.normalize(standardize(teacher), dim=-1)
    return F.mse_loss(s @ s.T, t @ t.T)


class Distiller(nn.Module):
    """The student, its projection heads and (unregistered, so not in checkpoints) the frozen teacher."""

    student: Any  # a timm ViT: forward_features, forward_head, num_features, patch_embed (beyond nn.Module's typing)
    teacher: Encoder
    view_mean: torch.Tensor  # buffers (1, 3, 1, 1)
    view_std: torch.Tensor

    def __init__(self, student: nn.Module, cfg: Any, teacher: Encoder | None = None):
        super().__init__()
        from ..encoders.base import IMAGENET_MEAN, IMAGENET_STD

        self.cfg = cfg
        self.student = student
        teacher = teacher if teacher is not None else load_teacher(cfg)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: stays out of state_dict and the optimiser
        ds, dt = int(self.student.num_features), int(teacher.embed_dim)
        self.proj_embed = nn.Linear(ds, dt) if ds != dt else nn.Identity()
        self.use_tokens = cfg.token_weight > 0 and teacher.has_tokens
        self.proj_tokens = (nn.Linear(ds, dt) if ds != dt else nn.Identity()) if self.use_tokens else None
        # views arrive ImageNet-normalised; the teacher may want other statistics
        self.register_buffer("view_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("view_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def resize(x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    @torch.no_grad()
    def teacher_targets(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's embedding (B, Dt) and token map (B, Dt, h, w) (None for non-ViT teachers)."""
        teacher = self.teacher
        if teacher.mean.device != views.device:
            teacher.to(views.device)
        x = views * self.view_std + self.view_mean
        x = (self.resize(x, teacher.info.img_size) - teacher.mean) / teacher.std
        if not self.use_tokens:
            return teacher.backbone(x).float(), None
        net: Any = teacher.backbone  # a timm ViT (use_tokens needs has_tokens): beyond nn.Module's typing
        feats = net.forward_features(x)
        embed = net.forward_head(feats, pre_logits=True) if hasattr(net, "forward_head") else net(x)
        prefix = int(getattr(net, "num_prefix_tokens", 0))
        ph, pw = teacher.token_patch_size
        h, w = x.shape[-2] // ph, x.shape[-1] // pw
        tokens = feats[:, prefix:].float().transpose(1, 2).reshape(len(x), -1, h, w)
        return embed.float(), tokens

    def student_features(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's embedding (B, Ds) and token map (B, Ds, h, w)."""
        net = self.student
        x = self.resize(views, self.cfg.img_size)
        feats = net.forward_features(x)
        embed = net.forward_head(feats, pre_logits=True)
        prefix = int(getattr(net, "num_prefix_tokens", 0))
        g = self.cfg.img_size // net.patch_embed.patch_size[0]
        return embed, feats[:, prefix:].transpose(1, 2).reshape(len(x), -1, g, g)

    def match(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured feature-matching loss (``cfg.distill_loss``)."""
        if self.cfg.distill_loss == "cosine":
            return match_loss(pred, target, self.cfg.l2_weight)
        return standardized_loss(pred, target)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        t_embed, t_tokens = self.teacher_targets(views)
        s_embed, s_tokens = self.student_features(views)
        loss = self.match(self.proj_embed(s_embed), t_embed)
        if self.cfg.relation_weight > 0:
            loss = loss + self.cfg.relation_weight * relation_loss(s_embed, t_embed)
        if t_tokens is not None and self.proj_tokens is not None:
            g = s_tokens.shape[-1]
            if t_tokens.shape[-1] > g:
                t_tokens = F.adaptive_avg_pool2d(t_tokens, g)
            elif t_tokens.shape[-1] < g:
                t_tokens = F.interpolate(t_tokens, size=(g, g), mode="bilinear", align_corners=False)
            s = self.proj_tokens(s_tokens.flatten(2).transpose(1, 2))
            loss = loss + self.cfg.token_weight * self.match(s, t_tokens.flatten(2).transpose(1, 2))
        return loss

    def teacher_record(self) -> dict[str, Any]:
        """What encoder.json records about the teacher."""
        info = self.teacher.info
        return {
            "name": info.name,
            "weights": info.weights,
            "weights_hash": info.weights_hash,
            "encoder_id": info.encoder_id,
            "embed_dim": info.embed_dim,
            "img_size": info.img_size,
            "parameters": sum(p.numel() for p in self.teacher.parameters()),
            "student_parameters": sum(p.numel() for p in self.student.parameters()),
            "token_loss": bool(self.use_tokens),
            "loss": self.cfg.distill_loss,
            "relation_weight": self.cfg.relation_weight,
            "whole_tile_views": self.cfg.whole_tile_views,
        }
