"""Stitching per-tile scores into a raster aligned with the slide.

Raster pixel (r, c) covers level-0 pixels [c * dx, (c + 1) * dx) x [r * dy, (r + 1) * dy), where
(dx, dy) = slide size / raster size, so the raster spans exactly the slide. A pixel's value is the mean
score of the tiles whose box holds the pixel's centre (overlapping tiles average); a pixel no tile
covers is NaN. When pixels are coarser than a quarter of a tile, the tiles are painted on a finer grid
first and each pixel averages its sub-pixels (area weighting), so no tile vanishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .source import TileScores

MAX_PIXELS = 2**28  # ~268 Mpx: beyond this a raster no longer fits comfortably in memory


@dataclass
class Heatmap:
    """A score raster: ``values`` float32 (h, w), NaN where there is no score."""

    values: np.ndarray
    downsample: tuple[float, float]
    slide_size: tuple[int, int]
    mpp: tuple[float, float]
    name: str
    slide_id: str

    @property
    def pixel_mpp(self) -> tuple[float, float]:
        """Microns per raster pixel (x, y)."""
        return (self.mpp[0] * self.downsample[0], self.mpp[1] * self.downsample[1])

    def pixel_at(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the raster pixel holding level-0 point (x, y)."""
        return int(y // self.downsample[1]), int(x // self.downsample[0])


def raster_shape(ts: TileScores, downsample: float | None = None, level: int | None = None) -> tuple[int, int]:
    """(h, w) of a raster at ``downsample`` (level-0 pixels per raster pixel), at a slide ``level``, or,
    by default, at the scale of the store's thumbnail and tissue mask."""
    w0, h0 = ts.slide_size
    if level is not None:
        downs = ts.store.attrs["slide"]["level_downsamples"]
        if not 0 <= level < len(downs):
            raise ConfigError(
                f"level {level} does not exist (the slide has {len(downs)})", fix=f"pick a level 0..{len(downs) - 1}"
            )
        downsample = float(downs[level])
    if downsample is None:
        return tuple(int(v) for v in ts.store.tissue_mask.shape[:2])  # type: ignore[return-value]
    if not downsample > 0:
        raise ConfigError(f"downsample must be positive, got {downsample}", fix="pass --downsample 1 or more")
    shape = (max(1, round(h0 / downsample)), max(1, round(w0 / downsample)))
    if shape[0] * shape[1] > MAX_PIXELS:
        raise ConfigError(
            f"a heatmap at downsample {downsample:g} would have {shape[1]} x {shape[0]} pixels",
            fix=f"pass a larger --downsample (at least {math.sqrt(w0 * h0 / MAX_PIXELS):.0f})",
        )
    return shape


def stitch(
    ts: TileScores,
    score: str,
    *,
    downsample: float | None = None,
    level: int | None = None,
    smooth: float = 0.0,
    mask_tissue: bool = True,
) -> Heatmap:
    """The raster of one score. ``smooth`` is a Gaussian sigma in tiles (normalised, so it blurs only
    between scored pixels and never spreads scores into empty ones); ``mask_tissue`` blanks pixels
    outside the store's tissue mask."""
    (values,) = ts.pick([score]).values()
    h, w = raster_shape(ts, downsample, level)
    dx, dy = ts.slide_size[0] / w, ts.slide_size[1] / h
    k = max(1, math.ceil(4 * max(dx / ts.extent[0], dy / ts.extent[1])))
    ok = np.isfinite(values)
    scored = values[ok]
    x0, y0, x1, y1 = (b[ok] for b in ts.boxes())
    fine, fine_ds = (h * k, w * k), (dx / k, dy / k)

    def paint(v: np.ndarray) -> np.ndarray:
        grid = _paint(v, x0, y0, x1, y1, fine, fine_ds)
        return grid.reshape(h, k, w, k).sum(axis=(1, 3)) if k > 1 else grid

    count = paint(np.ones(scored.size, np.int64))
    out = np.full((h, w), np.nan, np.float32)
    rest = count > 0
    if k == 1 and smooth <= 0:
        # where one tile alone covers a pixel, take that tile's score itself: painting tile numbers
        # (integers, so exact) says which tile it is
        single = count == 1
        out[single] = scored[paint(np.arange(1, scored.size + 1, dtype=np.int64))[single] - 1]
        rest &= ~single
    if rest.any():  # overlaps (and coarse or smoothed rasters): the mean of the tiles' scores
        total, weight = paint(scored.astype(np.float64)), count.astype(np.float64)
        if smooth > 0:
            total, weight = _smooth(total, weight, smooth * ts.extent[0] / dx, smooth * ts.extent[1] / dy)
        out[rest] = (total[rest] / weight[rest]).astype(np.float32)
    if mask_tissue:
        out[~_tissue_at(ts, (h, w))] = np.nan
    return Heatmap(out, (dx, dy), ts.slide_size, ts.mpp, score, ts.slide_id)


def _paint(
    values: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    shape: tuple[int, int],
    ds: tuple[float, float],
) -> np.ndarray:
    """Sum of ``values`` over the boxes holding each pixel's centre: four corner impulses per box in a
    difference array, then a cumulative sum along each axis (vectorised; exact for integer values)."""
    h, w = shape
    c0 = np.clip(np.ceil(x0 / ds[0] - 0.5), 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(x1 / ds[0] - 0.5), 0, w).astype(np.int64)
    r0 = np.clip(np.ceil(y0 / ds[1] - 0.5), 0, h).astype(np.int64)
    r1 = np.clip(np.ceil(y1 / ds[1] - 0.5), 0, h).astype(np.int64)
    corners = np.concatenate([r0 * (w + 1) + c0, r0 * (w + 1) + c1, r1 * (w + 1) + c0, r1 * (w + 1) + c1])
    signed = np.concatenate([values, -values, -values, values]).astype(np.float64)
    diff = np.bincount(corners, signed, minlength=(h + 1) * (w + 1))  # float64: exact for integers
    if values.dtype.kind in "iu":
        diff = diff.astype(np.int64)
    diff = diff.reshape(h + 1, w + 1)
    np.cumsum(diff, axis=0, out=diff)
    np.cumsum(diff, axis=1, out=diff)
    return diff[:h, :w]


def _smooth(total: np.ndarray, count: np.ndarray, sigma_x: float, sigma_y: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Gaussian smoothing (in float32): blur the per-pixel mean over the scored pixels and
    the scored-pixel indicator; their ratio is the smoothed mean."""
    import cv2

    covered = count > 0
    mean = np.where(covered, total / np.maximum(count, 1), 0.0).astype(np.float32)
    weight = covered.astype(np.float32)
    sx, sy = max(sigma_x, 1e-3), max(sigma_y, 1e-3)
    blur_mean = cv2.GaussianBlur(mean, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_CONSTANT)
    blur_weight = cv2.GaussianBlur(weight, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_CONSTANT)
    return blur_mean.astype(np.float64), np.where(covered, np.maximum(blur_weight, 1e-12), 0.0)


def _tissue_at(ts: TileScores, shape: tuple[int, int]) -> np.ndarray:
    """The store's tissue mask sampled at the centres of a raster's pixels."""
    mask = ts.store.tissue_mask.astype(bool)
    h, w = shape
    mh, mw = mask.shape
    rows = np.minimum(((np.arange(h) + 0.5) * mh / h).astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mw / w).astype(np.int64), mw - 1)
    return mask[np.ix_(rows, cols)]
