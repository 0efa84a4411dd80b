"""Pretraining data of 3D patches: augmented views of the (D, H, W) uint8 patches of volume TileStores
(``pathweak tile vol.nii.gz --mode 3d``), and plain resized patches for RankMe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..store.tiles import TileStore
from .data import TileIndex, _StoreCache

if TYPE_CHECKING:
    import torch

VOLUME_MEAN, VOLUME_STD = 0.5, 0.25  # as the monai: and pathweak: volume encoders normalise (encoders.VOLUME_MEAN)


def check_stores_kind(index: TileIndex, want_3d: bool) -> None:
    """A clear error when a store does not hold the kind of tiles the method trains on."""
    for path in index.paths:
        with TileStore.open(path) as s:
            if s.holds_3d_patches != want_3d:
                if want_3d:
                    raise ConfigError(
                        "--method mae3d trains on 3D patches and this store holds 2D tiles",
                        path=path,
                        fix="tile volumes with `pathweak tile VOL --mode 3d`, or use --method mae/dino for 2D tiles",
                    )
                raise ConfigError(
                    f"this store holds 3D patches ({'x'.join(map(str, s.tile_shape))} voxels) and the method trains on 2D tiles",
                    path=path,
                    fix="use --method mae3d for 3D patches, --method mae with 2D TileStores beside them (one ViT for "
                    "both), or tile the volume with --mode slices",
                )


def to_volume_tensor(patch: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (D, H, W) -> normalised float (1, size, size, size) (trilinear resize when needed)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(patch)).float().div_(255.0)[None, None]
    if tuple(x.shape[-3:]) != (size,) * 3:
        x = torch.nn.functional.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)
    return (x[0] - VOLUME_MEAN) / VOLUME_STD


def volume_view(
    patch: np.ndarray, rng: np.random.Generator, scale: tuple[float, float], intensity: float
) -> np.ndarray:
    """A random sub-cube covering a ``scale`` fraction of the patch's volume, a random flip along each
    axis and a random rotation in the axial plane, and an intensity scale/shift of strength ``intensity``."""
    d, h, w = patch.shape
    side = float(rng.uniform(*scale)) ** (1 / 3)
    cd, ch, cw = (max(1, int(round(n * side))) for n in (d, h, w))
    z, y, x = (int(rng.integers(0, n - c + 1)) for n, c in ((d, cd), (h, ch), (w, cw)))
    v = patch[z : z + cd, y : y + ch, x : x + cw]
    for axis in range(3):
        if rng.random() < 0.5:
            v = np.flip(v, axis)
    if ch == cw:
        v = np.rot90(v, int(rng.integers(4)), axes=(1, 2))
    if intensity > 0:
        a, b = rng.normal(1.0, intensity), rng.normal(0.0, intensity) * 255
        v = np.clip(v.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(v)


class VolumeViews:
    """One augmented view per 3D patch (MAE3D), seeded like :class:`~pathweak.ssl.data.SSLViews`."""

    def __init__(self, index: TileIndex, cfg: Any, indices: np.ndarray):
        self.index, self.cfg, self.indices = index, cfg, indices
        self._stores = _StoreCache(index.paths)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> list[Any]:
        import torch

        g = int(self.indices[i])
        patch = self._stores.tile(*self.index.locate(g))
        rng = np.random.default_rng([int(torch.randint(0, 2**62, (1,))), g])
        view = volume_view(patch, rng, self.cfg.mae_scale, self.cfg.volume_intensity_jitter)
        return [to_volume_tensor(view, self.cfg.img_size)]


class PlainPatches:
    """Un-augmented 3D patches resized to the model input (RankMe, probes)."""

    def __init__(self, index: TileIndex, indices: np.ndarray, size: int):
        self.index, self.indices, self.size = index, indices, size
        self._stores = _StoreCache(index.paths)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return to_volume_tensor(self._stores.tile(*self.index.locate(int(self.indices[i]))), self.size)


def datasets(
    index: TileIndex, cfg: Any, train_idx: np.ndarray, hold_idx: np.ndarray, mean: tuple, std: tuple
) -> tuple[Any, Any]:
    """(training views, held-out plain tiles) for ``cfg.method``: 3D patches for mae3d, RGB tiles otherwise
    (both kinds in one run: ssl/mixed.py)."""
    from .data import PlainTiles, SSLViews

    check_stores_kind(index, cfg.method == "mae3d")
    if cfg.method == "mae3d":
        return VolumeViews(index, cfg, train_idx), PlainPatches(index, hold_idx, cfg.img_size)
    return SSLViews(index, cfg, train_idx, mean, std), PlainTiles(index, hold_idx, cfg.img_size, mean, std)


__all__ = ["PlainPatches", "VolumeViews", "check_stores_kind", "datasets", "volume_view"]
