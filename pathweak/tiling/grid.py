"""Tile grid geometry (pure numpy): which pyramid level to read, and where the patches are."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import TileSpec
from ..errors import ConfigError, MissingMppError
from ..io.base import Slide
from ..tissue.mask import TissueMask

# Tiles are ordered in vertical strips this many level pixels wide (row-major inside a strip), so
# that a reader's tile cache needs only two source-tile rows of one strip, whatever the slide width.
STRIP_LEVEL_PX = 8192


@dataclass(frozen=True)
class LevelChoice:
    """The pyramid level patches are read from, and how."""

    level: int
    level_mpp: tuple[float, float]
    read_px: int  # patch side at the read level, before resizing to patch_px
    stride_level_px: int
    achieved_mpp: tuple[float, float]

    @property
    def resize(self) -> bool:
        """True when patches are read larger than stored and shrunk."""
        return self.achieved_mpp != self.level_mpp


@dataclass(frozen=True)
class TileGrid:
    """Patch positions: ``coords`` are level-0 top-left (x, y), int64, in storage order."""

    coords: np.ndarray
    grid_index: np.ndarray  # (N, 2) int32 (row, col) in the full grid
    tissue_fraction: np.ndarray  # (N,) float32
    grid_shape: tuple[int, int]  # (rows, cols) of the full grid
    choice: LevelChoice
    level_downsample: tuple[float, float]
    patch_px: int
    spec: TileSpec

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def level(self) -> int:
        return self.choice.level

    @property
    def read_px(self) -> int:
        return self.choice.read_px

    @property
    def level_coords(self) -> np.ndarray:
        """Top-left of each patch in pixels of the read level."""
        return (self.grid_index[:, ::-1].astype(np.int64)) * self.choice.stride_level_px


def choose_level(slide: Slide, spec: TileSpec) -> LevelChoice:
    """The level whose resolution is closest at or below ``spec.target_mpp`` (within tolerance).

    A level within ``spec.mpp_tolerance`` of the target is read as it is (achieved mpp = the level's);
    otherwise a proportionally larger patch is read there and resized (achieved mpp = the target).
    """
    if slide.mpp is None:
        raise MissingMppError(
            "the slide records no resolution (microns per pixel)",
            path=slide.path,
            fix="pass --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)",
        )
    target, tol = spec.target_mpp, spec.mpp_tolerance
    best = None
    for level in range(slide.level_count):
        mpp = slide.level_mpp(level)
        assert mpp is not None
        if mpp[0] <= target * (1 + tol) and (best is None or mpp[0] > best[1][0]):
            best = (level, mpp)
    if best is None:
        mpp0 = slide.mpp[0]
        raise ConfigError(
            f"target resolution {target} um/px is finer than the slide's level 0 ({mpp0:.4g} um/px)",
            path=slide.path,
            fix=f"pass --target-mpp {mpp0:.3g} or coarser",
        )
    level, mpp = best
    if abs(mpp[0] - target) <= tol * target:
        read_px, stride = spec.patch_px, spec.stride_px
        achieved = mpp
    else:
        scale = target / mpp[0]
        read_px = int(round(spec.patch_px * scale))
        stride = max(1, int(round(spec.stride_px * scale)))
        achieved = (mpp[0] * read_px / spec.patch_px, mpp[1] * read_px / spec.patch_px)
    return LevelChoice(level, mpp, read_px, stride, achieved)


def tile_grid(slide: Slide, mask: TissueMask, spec: TileSpec | None = None) -> TileGrid:
    """All patches of ``spec`` whose tissue fraction (from ``mask``) is at least ``spec.min_tissue``.

    Only whole patches inside the slide are kept. Coordinates are level-0 (x, y) int64.
    """
    spec = spec or TileSpec()
    choice = choose_level(slide, spec)
    lw, lh = slide.level_dimensions[choice.level]
    w0, h0 = slide.dimensions
    dsx, dsy = w0 / lw, h0 / lh
    read, stride = choice.read_px, choice.stride_level_px
    cols = (lw - read) // stride + 1 if lw >= read else 0
    rows = (lh - read) // stride + 1 if lh >= read else 0
    rr, cc = (a.ravel() for a in np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"))
    x_l, y_l = cc * stride, rr * stride
    x0, y0 = x_l * dsx, y_l * dsy
    frac = mask.fraction_in_boxes(x0, y0, x0 + read * dsx, y0 + read * dsy) if rr.size else np.zeros(0)
    keep = frac >= spec.min_tissue if spec.min_tissue > 0 else np.ones(rr.size, bool)
    rr, cc, frac = rr[keep], cc[keep], frac[keep]
    strip_cols = max(1, STRIP_LEVEL_PX // stride)
    order = np.lexsort((cc, rr, cc // strip_cols))
    rr, cc, frac = rr[order], cc[order], frac[order]
    coords = np.column_stack([np.round(cc * stride * dsx), np.round(rr * stride * dsy)]).astype(np.int64)
    return TileGrid(
        coords=coords.reshape(-1, 2),
        grid_index=np.column_stack([rr, cc]).astype(np.int32).reshape(-1, 2),
        tissue_fraction=frac.astype(np.float32),
        grid_shape=(int(rows), int(cols)),
        choice=choice,
        level_downsample=(dsx, dsy),
        patch_px=spec.patch_px,
        spec=spec,
    )
