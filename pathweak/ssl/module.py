"""The Lightning module for DINO and MAE pretraining of a timm ViT, with RankMe every epoch."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import torch
from torch import nn

from .augment import fourier_style_swap
from .config import SSLConfig
from .dino import DINOHead, DINOLoss, ema_update
from .lora import apply_explora
from .mae import MAE
from .rankme import rankme


def build_backbone(cfg: SSLConfig) -> nn.Module:
    """The timm ViT being trained (dynamic image size for DINO's multi-crop), or for mae3d the 3D ViT."""
    import timm

    if cfg.method == "mae3d":
        from .vit3d import build_vit3d, vit3d_kwargs

        return build_vit3d(vit3d_kwargs(cfg.arch, cfg.img_size, cfg.patch_3d, cfg.depth))
    return timm.create_model(cfg.timm_model, pretrained=False, num_classes=0, **backbone_kwargs(cfg))


def backbone_kwargs(cfg: SSLConfig) -> dict[str, Any]:
    """timm constructor arguments; recorded in encoder.json so ``pathweak:<dir>`` rebuilds the same model.

    MAE never trains the class token, so its embedding is the mean of the normalised patch tokens."""
    kwargs: dict[str, Any] = {"img_size": cfg.img_size, "dynamic_img_size": cfg.method == "dino"}
    if cfg.method in ("mae", "distill"):
        kwargs.update(global_pool="avg", fc_norm=False)
    if cfg.depth:
        kwargs["depth"] = cfg.depth
    if cfg.embed_dim or cfg.num_heads:  # a narrower (or wider) ViT than the arch's: timm takes both
        kwargs["embed_dim"], kwargs["num_heads"] = cfg.width
    return kwargs


def merge_export_fields(config: dict[str, Any], module: Any, cfg: SSLConfig) -> None:
    """Update the encoder.json ``config`` (in place) where the model is not a 2D timm ViT of a DINO/MAE
    run: the 3D ViT's constructor and the volume normalisation (mae3d), the teacher (distill)."""
    if cfg.method == "mae3d":
        from .data3d import VOLUME_MEAN, VOLUME_STD
        from .vit3d import vit3d_kwargs

        config.update(
            input="volume",
            timm_model=None,
            timm_kwargs={},
            patch_size=cfg.patch_3d,
            vit3d=vit3d_kwargs(cfg.arch, cfg.img_size, cfg.patch_3d, cfg.depth),
            mean=[VOLUME_MEAN],
            std=[VOLUME_STD],
        )
    elif cfg.method == "distill":
        config["distilled_from"] = cfg.teacher
        config["training"]["teacher"] = module.distiller.teacher_record()


class SSLModule(L.LightningModule):
    """DINO (student/EMA-teacher, multi-crop, centring, sharpening) or MAE (masked reconstruction).

    ``rankme`` (effective rank of the held-out embeddings) is logged at the end of every epoch and is
    what checkpoints are selected by.
    """

    def __init__(self, cfg: SSLConfig, total_steps: int, init_state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        backbone: Any = build_backbone(cfg)  # a timm ViT or ViT3D: embed_dim is beyond nn.Module's typing
        if init_state is not None:
            backbone.load_state_dict(init_state, strict=False)
        self.adapt_stats = apply_explora(backbone, cfg.unfreeze_last, cfg.lora_rank) if cfg.adapt_from else None
        if cfg.method == "dino":
            self.student = backbone
            self.student_head = DINOHead(backbone.embed_dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)
            self.teacher = copy.deepcopy(backbone)
            self.teacher_head = copy.deepcopy(self.student_head)
            for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
                p.requires_grad_(False)
            self.loss_fn = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.teacher_temp, cfg.center_momentum)
        elif cfg.method == "mae3d":
            from .mae3d import MAE3D

            self.mae: MAE = MAE3D(
                backbone, cfg.img_size, cfg.mask_ratio, cfg.decoder_dim, cfg.decoder_depth, cfg.norm_pix_loss
            )
        elif cfg.method == "distill":
            from .distiller import Distiller

            self.distiller = Distiller(backbone, cfg)
        else:
            self.mae = MAE(
                backbone, cfg.img_size, cfg.mask_ratio, cfg.decoder_dim, cfg.decoder_depth, cfg.norm_pix_loss
            )
        self.rankme_history: list[dict[str, float]] = []
        self._rank_batches: list[torch.Tensor] = []
        self._started: float | None = None

    def progress(self, step: int) -> float:
        """Fraction of training done, by steps or, under a time budget, by elapsed time (whichever is
        further), so learning-rate and momentum schedules complete within a ``max_minutes`` budget."""
        import time

        done = step / self.total_steps
        if self.cfg.max_minutes:
            if self._started is None:
                self._started = time.monotonic()
            done = max(done, (time.monotonic() - self._started) / (60 * self.cfg.max_minutes))
        return min(1.0, done)

    # -- the encoder that gets exported -----------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        """DINO: the teacher (the better, smoothed model); MAE: the encoder; distillation: the student."""
        if self.cfg.method == "distill":
            return self.distiller.student
        return self.teacher if self.cfg.method == "dino" else self.mae.encoder

    # -- training ---------------------------------------------------------------------------------
    def ssl_loss(self, batch: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """The objective on one batch of views: [global, global, local...] for DINO, [view] for MAE."""
        cfg = self.cfg
        if cfg.fourier_style > 0 and cfg.method != "mae3d":
            batch = [fourier_style_swap(v, cfg.fourier_style) if v.shape[-1] == cfg.img_size else v for v in batch]
        if cfg.method in ("mae", "mae3d"):
            return self.mae(batch[0], generator)
        if cfg.method == "distill":
            return self.distiller(batch[0])
        teacher_out = [self.teacher_head(self.teacher(v)) for v in batch[:2]]
        student_out = [self.student_head(self.student(v)) for v in batch]
        return self.loss_fn(student_out, teacher_out)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.ssl_loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch[0].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.update_teacher(self.global_step)

    def update_teacher(self, step: int) -> None:
        """DINO: move the teacher towards the student (momentum rising from ema_momentum to 1, cosine)."""
        if self.cfg.method == "dino":
            m = 1 - (1 - self.cfg.ema_momentum) * (math.cos(math.pi * self.progress(step)) + 1) / 2
            ema_update(self.teacher, self.student, m)
            ema_update(self.teacher_head, self.student_head, m)

    # -- RankMe on the held-out tiles ---------------------------------------------------------------
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._rank_batches.append(self.encoder(batch).detach().float().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._rank_batches:
            return
        value = rankme(torch.cat(self._rank_batches))
        self._rank_batches.clear()
        self.log("rankme", value, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.rankme_history.append(
                {"epoch": int(self.current_epoch), "step": int(self.global_step), "rankme": value}
            )

    # -- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        params = [p for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        lr = cfg.lr * cfg.batch_size / 256
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
        )
        warm = cfg.warmup_steps

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * self.progress(step)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rankme_history"] = self.rankme_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.rankme_history = list(checkpoint.get("rankme_history", []))
