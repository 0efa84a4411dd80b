"""Pretraining one ViT on 2D tiles and 3D patches together (Uni4Eye; the unified ViT of encoders/unified.py).

``pathweak pretrain --method mae`` on stores of both kinds sets ``SSLConfig.unified``: every batch is of one
kind (2D MAE views of tiles, or 3D MAE views of voxel cubes at ``volume_img_size``), and each epoch mixes
them by one rule (:class:`KindBatches`): ``samples_per_epoch`` views (default: every training tile once)
in ``samples_per_epoch // batch_size`` batches, of which a share ``volume_share`` are 3D (default: the 3D
patches' share of all training tiles, so every tile is as likely to be drawn whatever its kind; at least one
batch of each kind when the epoch has two batches or more); within each kind the items are a permutation
(drawn with replacement when more are asked than there are), and the batches' order is shuffled; all of it
is fixed by the seed and the epoch. RankMe runs on the held-out tiles of both kinds, in one embedding space.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..devices import world_rank
from ..errors import ConfigError
from ..store.tiles import TileStore
from .config import SSLConfig
from .data import PlainTiles, SSLViews, TileIndex
from .data3d import PlainPatches, VolumeViews


def store_kinds(index: TileIndex) -> np.ndarray:
    """Per store of ``index``: True when it holds 3D patches."""
    kinds = []
    for path in index.paths:
        with TileStore.open(path) as s:
            kinds.append(bool(s.holds_3d_patches))
    return np.asarray(kinds, bool)


def with_store_kinds(index: TileIndex, cfg: SSLConfig) -> SSLConfig:
    """``cfg`` with ``unified`` set when MAE pretrains on 2D and 3D stores together (checked)."""
    kinds = store_kinds(index)
    mixed = bool(kinds.any() and not kinds.all())
    if mixed and cfg.method == "mae":
        return replace(cfg, unified=True)
    if cfg.unified and not mixed:
        raise ConfigError(
            "unified 2D/3D pretraining needs 2D TileStores and 3D patch stores together",
            path=index.paths[0],
            fix="pass stores of both kinds, or leave unified out",
        )
    return cfg


def item_kinds(index: TileIndex, indices: np.ndarray) -> np.ndarray:
    """Per item (a global tile index): True when its store holds 3D patches."""
    kinds = store_kinds(index)
    stores = np.searchsorted(index.offsets, np.asarray(indices, np.int64), side="right") - 1
    return kinds[stores]


def volume_settings(cfg: SSLConfig) -> SSLConfig:
    """The settings of the 3D views: mae3d's, on cubes of the 3D branch's side."""
    return replace(cfg, method="mae3d", unified=False, img_size=cfg.volume_img_size)


class MixedViews:
    """One MAE view per item: of a 2D tile (3, S, S), or of a 3D patch (1, C, C, C)."""

    def __init__(self, index: TileIndex, cfg: SSLConfig, indices: np.ndarray, mean: tuple, std: tuple):
        self.is_3d = item_kinds(index, indices)
        self.flat = SSLViews(index, cfg, indices, mean, std)
        self.cubes = VolumeViews(index, volume_settings(cfg), indices)

    def __len__(self) -> int:
        return len(self.is_3d)

    def __getitem__(self, i: int) -> list[Any]:
        return self.cubes[i] if self.is_3d[i] else self.flat[i]


class MixedPlain:
    """Un-augmented held-out items of both kinds (RankMe)."""

    def __init__(self, index: TileIndex, cfg: SSLConfig, indices: np.ndarray, mean: tuple, std: tuple):
        self.is_3d = item_kinds(index, indices)
        self.flat = PlainTiles(index, indices, cfg.img_size, mean, std)
        self.cubes = PlainPatches(index, indices, cfg.volume_img_size)

    def __len__(self) -> int:
        return len(self.is_3d)

    def __getitem__(self, i: int) -> Any:
        return self.cubes[i] if self.is_3d[i] else self.flat[i]


class KindBatches:
    """Batches of one kind each, mixed per epoch by the rule of the module docstring; under DDP rank r
    takes every world-th batch (padded so every rank takes as many). ``sampler`` is the object itself, where
    Lightning looks for ``set_epoch`` on a batch sampler."""

    def __init__(self, is_3d: np.ndarray, batch_size: int, num_samples: int, share: float | None, seed: int = 0):
        self.idx = (np.flatnonzero(~is_3d), np.flatnonzero(is_3d))
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        n = max(1, num_samples // batch_size)
        share = len(self.idx[1]) / max(1, len(is_3d)) if share is None else share
        three = int(round(n * share))
        if n >= 2 and len(self.idx[0]) and len(self.idx[1]):
            three = min(max(three, 1), n - 1)
        self.counts = (n - three, three)  # 2D and 3D batches per epoch
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        import torch

        world, rank = world_rank()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches: list[list[int]] = []
        for items, count in zip(self.idx, self.counts, strict=True):
            k = count * self.batch_size
            if not k:
                continue
            pick = (
                torch.randperm(len(items), generator=g)[:k]
                if k <= len(items)
                else torch.randint(len(items), (k,), generator=g)
            )
            chosen = items[pick.numpy()].tolist()
            batches += [chosen[j : j + self.batch_size] for j in range(0, k, self.batch_size)]
        batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        batches += batches[: -len(batches) % world]
        return iter(batches[rank::world])

    def __len__(self) -> int:
        world, _ = world_rank()
        return -(-sum(self.counts) // world)


def holdout_batches(is_3d: np.ndarray, batch_size: int) -> list[list[int]]:
    """The held-out items in batches of one kind (2D first), in order."""
    out: list[list[int]] = []
    for items in (np.flatnonzero(~is_3d), np.flatnonzero(is_3d)):
        out += [items[j : j + batch_size].tolist() for j in range(0, len(items), batch_size)]
    return out


def mixed_loaders(
    views: MixedViews, held_out: MixedPlain, cfg: SSLConfig, per_epoch: int, pin: bool
) -> tuple[Any, Any]:
    """(training loader, held-out loader) of a unified run: batches of one kind each."""
    from torch.utils.data import DataLoader

    train: Any = DataLoader(
        views,  # type: ignore[arg-type]  # any map-style dataset works; torch types it as its Dataset class
        batch_sampler=KindBatches(views.is_3d, cfg.batch_size, per_epoch, cfg.volume_share, cfg.seed),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=pin,
    )
    hold: Any = DataLoader(
        held_out,  # type: ignore[arg-type]
        batch_sampler=holdout_batches(held_out.is_3d, 64),
        num_workers=min(cfg.num_workers, 1),
    )
    return train, hold
