"""Streaming pretraining data: random access to tiles across many TileStores (decoded in loader
workers, each opening the stores it needs), never loading a cohort into memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import world_rank
from ..errors import ConfigError
from ..store.tiles import TileStore
from .augment import pathology_view, stain_bank, to_tensor, whole_tile_view

STAIN_BANK_TILES = 16  # random tiles of the cohort whose stains are the targets of cfg.stain_augment


class TileIndex:
    """A global index over the tiles of several TileStores: ``locate(i) -> (store, local index)``."""

    def __init__(self, stores: Sequence[str | Path]):
        if not stores:
            raise ConfigError(
                "no TileStores given", fix="pass one or more <slide>.zarr or a tiles/ folder as arguments"
            )
        self.paths = [Path(p) for p in stores]
        sizes, keys = [], []
        for p in self.paths:
            with TileStore.open(p) as s:
                sizes.append(len(s))
                keys.append(s.attrs.get("cache_key"))
        self.sizes = np.asarray(sizes, np.int64)
        self.cache_keys = keys
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        if self.total == 0:
            raise ConfigError("the TileStores hold no tiles", fix="tile slides with tissue first")

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return s, int(i - self.offsets[s])


class _StoreCache:
    """TileStores opened lazily in the process that reads them (each loader worker has its own)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._open: dict[int, TileStore] = {}

    def tile(self, store: int, index: int) -> np.ndarray:
        s = self._open.get(store)
        if s is None:
            s = self._open[store] = TileStore.open(self.paths[store])
        return s.read_tiles([index])[0]

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "_open": {}}


class SSLViews:
    """Dataset of augmented views of tile ``i``: for DINO 2 global + ``local_crops`` local views, for
    MAE one view. The augmentation seed is drawn from torch's generator, which Lightning seeds per run
    and loader worker, so a run is reproducible and every epoch sees new views."""

    def __init__(self, index: TileIndex, cfg: Any, indices: np.ndarray, mean: tuple, std: tuple):
        self.index, self.cfg, self.indices = index, cfg, indices
        self.mean, self.std = mean, std
        self._stores = _StoreCache(index.paths)
        self.bank: list[Any] = []
        if getattr(cfg, "stain_augment", 0.0) > 0:  # the random references: stains of random tiles (seeded)
            picks = np.random.default_rng(getattr(cfg, "seed", 0)).choice(
                index.total, min(STAIN_BANK_TILES, index.total), replace=False
            )
            self.bank = stain_bank([self._stores.tile(*index.locate(int(g))) for g in np.sort(picks)])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> list[Any]:
        cfg = self.cfg
        g = int(self.indices[i])
        import torch

        img = self._stores.tile(*self.index.locate(g))
        rng = np.random.default_rng([int(torch.randint(0, 2**62, (1,))), g])
        if cfg.method == "mae":
            views = [pathology_view(img, rng, cfg.img_size, cfg.mae_scale, MAE_AUGMENT)]
        elif cfg.method == "distill":  # one view at the larger of the teacher's and the student's input size
            size = max(cfg.img_size, cfg.teacher_img_size or 0)
            whole = cfg.whole_tile_views > 0 and rng.random() < cfg.whole_tile_views  # (no draw when off)
            views = [
                whole_tile_view(img, rng, size)
                if whole
                else pathology_view(img, rng, size, cfg.global_scale, cfg, self.bank)
            ]
        else:
            views = [pathology_view(img, rng, cfg.img_size, cfg.global_scale, cfg, self.bank) for _ in range(2)]
            views += [
                pathology_view(img, rng, cfg.local_size, cfg.local_scale, cfg, self.bank)
                for _ in range(cfg.local_crops)
            ]
        return [to_tensor(v, self.mean, self.std) for v in views]


class PlainTiles:
    """Dataset of un-augmented tiles resized to the model input (for RankMe and probes)."""

    def __init__(self, index: TileIndex, indices: np.ndarray, size: int, mean: tuple, std: tuple):
        self.index, self.indices, self.size = index, indices, size
        self.mean, self.std = mean, std
        self._stores = _StoreCache(index.paths)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        import cv2

        img = self._stores.tile(*self.index.locate(int(self.indices[i])))
        if img.shape[0] != self.size:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return to_tensor(img, self.mean, self.std)


def split_holdout(total: int, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a fixed random sample held out for RankMe."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(total)
    n_holdout = min(n_holdout, max(total // 5, 1)) if total > 1 else 0
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


class _CropsOnly:
    """MAE's views: crops and dihedral transforms only (no stain or colour jitter, no blur)."""

    hed_jitter = 0.0
    color_jitter = 0.0
    hue_jitter = 0.0
    blur_prob = 0.0


MAE_AUGMENT = _CropsOnly()


class EpochSampler:
    """``num_samples`` of ``n`` training views per epoch: a permutation (drawn with replacement when more
    are asked than there are), fixed by the seed and the epoch (``set_epoch``, called by Lightning), the
    same draw in every DDP rank, of which rank r takes every world-th (padded so every rank takes as many
    steps). One process sees all of it, so an epoch of N ranks is the epoch of one process split N ways
    (and the validation loader, not sharded, gives every rank all held-out tiles)."""

    def __init__(self, n: int, num_samples: int, seed: int = 0):
        self.n, self.num_samples, self.seed = n, num_samples, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        import torch

        world, rank = world_rank()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.num_samples <= self.n:
            order = torch.randperm(self.n, generator=g)[: self.num_samples].tolist()
        else:
            order = torch.randint(self.n, (self.num_samples,), generator=g).tolist()
        order += order[: -len(order) % world]
        return iter(order[rank::world])

    def __len__(self) -> int:
        world, _ = world_rank()
        return -(-self.num_samples // world)
