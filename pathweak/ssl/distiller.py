"""Feature distillation: a small timm ViT (the student) learns to reproduce a frozen teacher encoder's
embedding and, for ViT teachers, its patch tokens, on augmented views of the TileStores' tiles.

The loss is cosine distance plus a scale-free L2 (MSE over the target's mean square) between linear
projections of the student's features (student dim -> teacher dim) and the teacher's, for the image
embedding and for the token map (the teacher's map pooled or interpolated to the student's grid).
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

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        t_embed, t_tokens = self.teacher_targets(views)
        s_embed, s_tokens = self.student_features(views)
        loss = match_loss(self.proj_embed(s_embed), t_embed, self.cfg.l2_weight)
        if t_tokens is not None and self.proj_tokens is not None:
            g = s_tokens.shape[-1]
            if t_tokens.shape[-1] > g:
                t_tokens = F.adaptive_avg_pool2d(t_tokens, g)
            elif t_tokens.shape[-1] < g:
                t_tokens = F.interpolate(t_tokens, size=(g, g), mode="bilinear", align_corners=False)
            s = self.proj_tokens(s_tokens.flatten(2).transpose(1, 2))
            loss = loss + self.cfg.token_weight * match_loss(s, t_tokens.flatten(2).transpose(1, 2), self.cfg.l2_weight)
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
        }
