"""INS trained end to end (after Qu et al. 2023, "Rethinking MIL for WSI classification: a good instance
classifier is all you need"): the prototypes of the INS head give each training tile a pseudo-label, and
those pseudo-labels fine-tune the encoder, on TileStores, in batches of tiles (never a whole slide's pixels
in memory).

One epoch of :func:`finetune_ins`:

1. embed every training tile with the current encoder (no gradients, ``EMBED_BATCH`` tiles at a time): one
   bag of features per slide, as a FeatureBank would hold them;
2. train the INS head on those bags (``warmup_epochs`` passes before the first encoder update, then one): its
   prototypes and smoothed pseudo-targets (``HeadOutput.aux["pseudo_targets"]``: a negative slide's tiles are
   negative, a positive slide's tiles take the nearer of the two prototypes) are kept per tile;
3. fine-tune the encoder on ``tile_batch`` tiles at a time drawn across the training slides (a seeded
   permutation; ``samples_per_epoch`` tiles, default all), each under a random flip/rotation, with the
   cross-entropy of the head's instance classifier (``fc`` then ``classifier``) against the tile's soft
   pseudo-target, weighted by the inverse frequency of its pseudo-class; the encoder's trainable blocks
   (all but the patch embedding and the first ``frozen_blocks`` transformer blocks) step with
   ``encoder_lr``, the head's with the training learning rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ConfigError
from ..heads import MILHead, create_head
from ..progress import progress_bar
from ..store.tiles import TileStore
from .config import FinetuneConfig, TrainConfig  # noqa: F401  (FinetuneConfig: re-exported for callers)

EMBED_BATCH = 256  # tiles per no-grad embedding batch


@dataclass
class FinetuneResult:
    """The fine-tuned encoder and INS head, and how each epoch went."""

    encoder: Any  # pathweak Encoder
    head: MILHead
    history: list[dict[str, float]] = field(default_factory=list)
    trainable: int = 0  # encoder parameters trained
    frozen: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def freeze(encoder: Any, blocks: int) -> list[torch.nn.Parameter]:
    """Freeze the patch embedding and the first ``blocks`` transformer blocks of the encoder's ViT (a unified
    2D/3D ViT: its 2D path); returns the parameters left to train. ``blocks`` > 0 needs a ViT."""
    net = encoder.backbone
    vit = getattr(net, "vit", net)  # the 2D ViT of a unified 2D/3D ViT (encoders/unified.py)
    if blocks:
        layers = getattr(vit, "blocks", None)
        if layers is None or not hasattr(vit, "patch_embed"):
            raise ConfigError(
                f"--frozen-blocks needs a ViT encoder; {encoder.info.name} has no transformer blocks",
                fix="pass --frozen-blocks 0 to fine-tune every layer",
            )
        if blocks > len(layers):
            raise ConfigError(
                f"--frozen-blocks {blocks}: the encoder has {len(layers)} transformer blocks",
                fix=f"pass at most {len(layers) - 1} so some train",
            )
        fixed = [vit.patch_embed, *list(layers)[:blocks]]
        for module in fixed:
            module.requires_grad_(False)
        for name in ("cls_token", "pos_embed", "reg_token"):
            p = getattr(vit, name, None)
            if isinstance(p, torch.nn.Parameter):
                p.requires_grad_(False)
    return [p for p in net.parameters() if p.requires_grad]


def finetune_ins(
    stores: list[Path],
    labels: list[int],
    n_classes: int,
    cfg: FinetuneConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    *,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``cfg.encoder`` with an INS head on the tiles of ``stores`` (training slides, class indices
    ``labels``); see the module docstring."""
    from ..encoders import create_encoder
    from .module import make_criterion

    started, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    encoder = create_encoder(cfg.encoder, cfg.weights).to(device)
    opened = [TileStore.open(p) for p in stores]
    try:
        for s in opened:
            encoder.check_tiles(s.holds_3d_patches, s.tile_shape, str(s.path))
        trainable = freeze(encoder, cfg.frozen_blocks)
        head = create_head("ins", encoder.embed_dim, n_classes, **train_cfg.head_options).to(device)
        enc_opt = torch.optim.AdamW(trainable, lr=cfg.encoder_lr, weight_decay=train_cfg.weight_decay)
        head_opt = torch.optim.AdamW(head.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        criterion = make_criterion("binary" if n_classes == 2 else "multiclass")
        y = torch.as_tensor(labels, device=device)
        history = []
        with progress_bar(cfg.epochs, "fine-tuning the encoder with INS", progress, unit="epochs") as advance:
            for epoch in range(cfg.epochs):
                t0, c0 = time.perf_counter(), time.process_time()
                bags = _embed_all(encoder, opened, device)
                for _ in range(cfg.warmup_epochs if epoch == 0 else 1):
                    head_loss, targets = _head_epoch(head, head_opt, bags, y, criterion, rng)
                enc_loss = _encoder_epoch(encoder, head, enc_opt, head_opt, opened, targets, cfg, rng, device)
                positive = [t.argmax(1).ne(head.options.get("negative_class", 0)).float().mean() for t in targets]
                history.append(
                    {
                        "epoch": epoch,
                        "head_loss": round(head_loss, 5),
                        "encoder_loss": round(enc_loss, 5),
                        "pseudo_positive_share": round(float(torch.stack(positive).mean()), 5),
                        "seconds": round(time.perf_counter() - t0, 1),
                        "cpu_seconds": round(time.process_time() - c0, 1),
                    }
                )
                advance(1)
    finally:
        for s in opened:
            s.close()
    n_train = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in encoder.backbone.parameters())
    return FinetuneResult(
        encoder.eval(),
        head.eval(),
        history,
        n_train,
        n_all - n_train,
        time.perf_counter() - started,
        time.process_time() - cpu_start,
    )


@torch.no_grad()
def _embed_all(encoder: Any, stores: list[TileStore], device: torch.device) -> list[torch.Tensor]:
    """One bag (n_i, D) float32 per store, embedded ``EMBED_BATCH`` tiles at a time in eval mode."""
    encoder.eval()
    bags = []
    for s in stores:
        parts = [
            encoder.embed(torch.from_numpy(s.read_tiles(slice(a, min(len(s), a + EMBED_BATCH)))).to(device)).float()
            for a in range(0, len(s), EMBED_BATCH)
        ]
        bags.append(torch.cat(parts) if parts else torch.zeros(0, encoder.embed_dim, device=device))
    return bags


def _head_epoch(
    head: MILHead, opt: Any, bags: list[torch.Tensor], y: torch.Tensor, criterion: Any, rng: np.random.Generator
) -> tuple[float, list[torch.Tensor]]:
    """One pass of the INS head over the bags (shuffled); its mean loss and each bag's pseudo-targets (N, C)."""
    head.train()
    losses, targets = [], [torch.empty(0)] * len(bags)
    for i in rng.permutation(len(bags)):
        out = head(bags[i], None, int(y[i]), bag_id=int(i))
        loss = head.loss(out, y[i], criterion)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        targets[i] = out.aux["pseudo_targets"].detach()
    return float(np.mean(losses)), targets


def _encoder_epoch(
    encoder: Any,
    head: Any,
    enc_opt: Any,
    head_opt: Any,
    stores: list[TileStore],
    targets: list[torch.Tensor],
    cfg: FinetuneConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """Encoder steps on batches of tiles against their soft pseudo-targets; the mean loss."""
    from .. import devices

    soft = torch.cat(targets)  # (T, C): every training tile, store by store
    hard = soft.argmax(1)
    counts = torch.bincount(hard, minlength=soft.shape[1]).float()
    weight = torch.where(counts > 0, len(hard) / (soft.shape[1] * counts.clamp_min(1)), torch.zeros_like(counts))
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in stores])])
    order = rng.permutation(int(offsets[-1]))[: cfg.samples_per_epoch or None]
    encoder.train()
    head.train()
    losses = []
    for start in range(0, len(order), cfg.tile_batch):
        rows = np.sort(order[start : start + cfg.tile_batch])
        store_of = np.searchsorted(offsets, rows, side="right") - 1
        tiles = np.concatenate([stores[k].read_tiles(rows[store_of == k] - offsets[k]) for k in np.unique(store_of)])
        turns, flips = rng.integers(4, size=len(tiles)), rng.random(len(tiles)) < 0.5
        tiles = np.stack(
            [np.rot90(t, k)[:, ::-1] if f else np.rot90(t, k) for t, k, f in zip(tiles, turns, flips, strict=True)]
        )
        x = encoder.preprocess(torch.from_numpy(np.ascontiguousarray(tiles)).to(device))
        with devices.autocast(x.device, encoder.info.precision):
            logits = head.classifier(head.fc(encoder.backbone(x).float()))
        logp = F.log_softmax(logits.float(), 1)
        index = torch.as_tensor(rows, device=soft.device)
        w = weight[hard[index]].to(device)
        loss = (-(soft[index].to(device) * logp).sum(1) * w).sum() / w.sum().clamp_min(1e-6)
        enc_opt.zero_grad()
        head_opt.zero_grad()
        loss.backward()
        enc_opt.step()
        head_opt.step()
        losses.append(float(loss.detach()))
    encoder.eval()
    return float(np.mean(losses)) if losses else float("nan")
