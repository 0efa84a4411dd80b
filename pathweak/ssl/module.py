"""The Lightning module for DINO and MAE pretraining of a timm ViT, with RankMe every epoch."""

from __future__ import annotations

import copy
import math
import time
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
    """The timm ViT being trained (dynamic image size for DINO's multi-crop), for mae3d the 3D ViT, and for a
    unified run one ViT with a 2D and a 3D patch embedding (encoders/unified.py)."""
    import timm

    if cfg.unified:  # one ViT for 2D tiles and 3D patches (Uni4Eye)
        from ..encoders.unified import UnifiedViT

        vit = timm.create_model(cfg.timm_model, pretrained=False, num_classes=0, **backbone_kwargs(cfg))
        return UnifiedViT(vit, unified_volume(cfg))
    if cfg.method == "mae3d":
        from ..encoders.vit3d import build_vit3d, vit3d_kwargs

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


def unified_volume(cfg: SSLConfig) -> dict[str, Any]:
    """The 3D branch of a unified ViT (encoders/unified.py VolumeBranch arguments)."""
    return {"img_size": cfg.volume_img_size, "patch_size": cfg.patch_3d, "in_chans": 1}


def merge_export_fields(config: dict[str, Any], module: Any, cfg: SSLConfig) -> None:
    """Update the encoder.json ``config`` (in place) where the model is not a 2D timm ViT of a DINO/MAE
    run: the 3D ViT's constructor and the volume normalisation (mae3d), the teacher (distill)."""
    if cfg.unified:
        from ..encoders.unified import UNIFIED_INPUT
        from .data3d import VOLUME_MEAN, VOLUME_STD

        config.update(input=UNIFIED_INPUT, volume={**unified_volume(cfg), "mean": [VOLUME_MEAN], "std": [VOLUME_STD]})
    elif cfg.method == "mae3d":
        from ..encoders.vit3d import vit3d_kwargs
        from .data3d import VOLUME_MEAN, VOLUME_STD

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

    def __init__(
        self, cfg: SSLConfig, total_steps: int | None = None, init_state: dict[str, torch.Tensor] | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.total_steps = max(1, total_steps or 1)
        self._count_steps = total_steps is None  # from the trainer: optimiser steps of this rank's loader
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
        elif cfg.unified:  # the 2D MAE on the ViT and the 3D MAE on its volume branch: one transformer
            from .mae3d import MAE3D

            self.unified = backbone
            self.mae = MAE(
                backbone.vit, cfg.img_size, cfg.mask_ratio, cfg.decoder_dim, cfg.decoder_depth, cfg.norm_pix_loss
            )
            self.mae3d = MAE3D(
                backbone.volume,
                cfg.volume_img_size,
                cfg.mask_ratio,
                cfg.decoder_dim,
                cfg.decoder_depth,
                cfg.norm_pix_loss,
            )
        elif cfg.method == "mae3d":
            from .mae3d import MAE3D

            self.mae = MAE3D(
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
        self._time_done = 0.0  # share of a max_minutes (or max_cpu_minutes) budget used, as rank 0 measured it
        self._cpu_mark: float | None = None  # process CPU time at the first step of this process
        self._cpu_before = 0.0  # CPU seconds of the run before a resume
        self.schedule_state: dict[str, float] = {}  # where the schedules are after the last step
        self.ranks_agree: bool | None = None

    def progress(self, step: int) -> float:
        """Fraction of training done, by steps or, under a time budget, by elapsed time (whichever is
        further), so learning-rate and momentum schedules complete within a ``max_minutes`` budget. Under
        DDP the elapsed time is rank 0's (broadcast each step), so every rank follows one schedule."""
        return min(1.0, max(step / self.total_steps, self._time_done))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        shares = []
        if self.cfg.max_minutes:
            from lightning.pytorch.callbacks import Timer

            timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
            elapsed = timer.time_elapsed("train") if timer is not None else 0.0  # includes a resumed run's time
            shares.append(elapsed / (60 * self.cfg.max_minutes))
        if self.cfg.max_cpu_minutes:
            shares.append(self.cpu_seconds() / (60 * self.cfg.max_cpu_minutes))
        if not shares:
            return None
        self._time_done = float(self.trainer.strategy.broadcast(max(shares), src=0))
        if self.cfg.max_cpu_minutes and self._time_done >= 1:  # the CPU budget is spent: end here
            self.trainer.should_stop = True
            return -1  # the rest of this epoch is skipped; its RankMe still runs
        return None

    def cpu_seconds(self) -> float:
        """CPU time of this training process since its first step, plus a resumed run's (``max_cpu_minutes``)."""
        now = time.process_time()
        if self._cpu_mark is None:
            self._cpu_mark = now
        return self._cpu_before + now - self._cpu_mark

    # -- the encoder that gets exported -----------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        """DINO: the teacher (the better, smoothed model); MAE: the encoder; distillation: the student."""
        if self.cfg.method == "distill":
            return self.distiller.student
        if self.cfg.unified:
            return self.unified
        return self.teacher if self.cfg.method == "dino" else self.mae.encoder

    # -- training ---------------------------------------------------------------------------------
    def ssl_loss(self, batch: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """The objective on one batch of views: [global, global, local...] for DINO, [view] for MAE."""
        cfg = self.cfg
        if cfg.fourier_style > 0 and cfg.method != "mae3d":
            batch = [
                fourier_style_swap(v, cfg.fourier_style) if v.ndim == 4 and v.shape[-1] == cfg.img_size else v
                for v in batch
            ]
        if cfg.unified and batch[0].ndim == 5:  # a batch of 3D patches (each batch is of one kind)
            return self.mae3d(batch[0], generator)
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
        if self.cfg.unified:  # which kind this step trained on: train_loss_2d / train_loss_3d in the CSV log
            kind = "3d" if batch[0].ndim == 5 else "2d"
            self.log(f"train_loss_{kind}", loss, on_step=True, on_epoch=False, batch_size=batch[0].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        momentum = self.update_teacher(self.global_step)
        optimizer = self.trainer.optimizers[0]
        self.schedule_state = {
            "step": int(self.global_step),
            "total_steps": int(self.total_steps),
            "progress": round(self.progress(self.global_step), 6),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "base_lr": float(optimizer.param_groups[0]["initial_lr"]),
            **({"teacher_momentum": momentum} if momentum is not None else {}),
            **({"cpu_seconds": round(self.cpu_seconds(), 1)} if self.cfg.max_cpu_minutes else {}),
        }

    def update_teacher(self, step: int) -> float | None:
        """DINO: move the teacher towards the student (momentum rising from ema_momentum to 1, cosine); the
        momentum used (None for the other methods)."""
        if self.cfg.method != "dino":
            return None
        m = 1 - (1 - self.cfg.ema_momentum) * (math.cos(math.pi * self.progress(step)) + 1) / 2
        ema_update(self.teacher, self.student, m)
        ema_update(self.teacher_head, self.student_head, m)
        return m

    def on_train_end(self) -> None:
        """DDP: check that every rank ends with the same weights and schedule (they train one model)."""
        if self.trainer.world_size < 2:
            return
        with torch.no_grad():
            weights = torch.stack([p.detach().double().sum() for p in self.parameters()]).sum().reshape(1)
            values = [self._time_done, *(float(v) for v in self.schedule_state.values())]
            mine = torch.cat([weights, torch.tensor(values, dtype=torch.float64, device=weights.device)])
            every = torch.as_tensor(self.all_gather(mine))  # (ranks, values)
        self.ranks_agree = bool(torch.equal(every, every[:1].expand_as(every)))

    # -- RankMe on the held-out tiles ---------------------------------------------------------------
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._rank_batches.append(self.encoder(batch).detach().float().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._rank_batches:
            return
        embeddings = torch.cat(self._rank_batches)  # every held-out tile, on every rank (not sharded)
        value = rankme(embeddings)
        self._rank_batches.clear()
        self.log("rankme", value, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.rankme_history.append(
                {
                    "epoch": int(self.current_epoch),
                    "step": int(self.global_step),
                    "rankme": value,
                    "tiles": len(embeddings),
                }
            )

    # -- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        params = [p for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        world = self.trainer.world_size if self._trainer is not None else 1
        lr = cfg.lr * cfg.batch_size * world / 256  # the linear scaling rule, on the batch of all ranks together
        if self._count_steps and self._trainer is not None:
            self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))
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
        if self.cfg.max_cpu_minutes:
            checkpoint["cpu_seconds"] = self.cpu_seconds()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.rankme_history = list(checkpoint.get("rankme_history", []))
        self._cpu_before, self._cpu_mark = float(checkpoint.get("cpu_seconds", 0.0)), None
