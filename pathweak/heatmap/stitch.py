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
            raise ConfigError(f"level {level} does not exist (the slide has {len(downs)})", fix=f"pick a level 0..{len(downs) - 1}")
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
    boxes = [b[ok] for b in ts.boxes()]
    fine, fine_ds = (h * k, w * k), (dx / k, dy / k)
    total = _paint(scored.astype(np.float64), *boxes, fine, fine_ds)
    count = _paint(np.ones(scored.size), *boxes, fine, fine_ds)
    if k > 1:
        total = total.reshape(h, k, w, k).sum(axis=(1, 3))
        count = count.reshape(h, k, w, k).sum(axis=(1, 3))
    covered = count > 0.5
    if smooth > 0:
        total, count = _smooth(total, count, smooth * ts.extent[0] / dx, smooth * ts.extent[1] / dy)
    out = np.full((h, w), np.nan, np.float32)
    out[covered] = (total[covered] / count[covered]).astype(np.float32)
    if k == 1 and smooth <= 0:
        # where one tile alone covers a pixel, take its score itself rather than a difference of sums
        # (sums of tile numbers are integers, so exact)
        single = np.rint(count) == 1
        which = np.rint(_paint(np.arange(1, scored.size + 1, dtype=np.float64), *boxes, fine, fine_ds)[single])
        out[single] = scored[which.astype(np.int64) - 1]
    if mask_tissue:
        out[~_tissue_at(ts, (h, w))] = np.nan
    return Heatmap(out, (dx, dy), ts.slide_size, ts.mpp, score, ts.slide_id)


def _paint(
    values: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
    shape: tuple[int, int], ds: tuple[float, float],
) -> np.ndarray:
    """Sum of ``values`` over the boxes holding each pixel's centre: four corner impulses per box in a
    difference array, then a cumulative sum along each axis (vectorised; exact for integer counts)."""
    h, w = shape
    c0 = np.clip(np.ceil(x0 / ds[0] - 0.5), 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(x1 / ds[0] - 0.5), 0, w).astype(np.int64)
    r0 = np.clip(np.ceil(y0 / ds[1] - 0.5), 0, h).astype(np.int64)
    r1 = np.clip(np.ceil(y1 / ds[1] - 0.5), 0, h).astype(np.int64)
    diff = np.zeros((h + 1) * (w + 1), np.float64)
    for rows, cols, sign in ((r0, c0, 1.0), (r0, c1, -1.0), (r1, c0, -1.0), (r1, c1, 1.0)):
        np.add.at(diff, rows * (w + 1) + cols, sign * values)
    diff = diff.reshape(h + 1, w + 1)
    np.cumsum(diff, axis=0, out=diff)
    np.cumsum(diff, axis=1, out=diff)
    return diff[:h, :w]


def _smooth(total: np.ndarray, count: np.ndarray, sigma_x: float, sigma_y: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Gaussian smoothing: blur the per-pixel mean and its weight, keep their ratio."""
    import cv2

    covered = count > 0.5
    mean = np.where(covered, total / np.maximum(count, 1e-12), 0.0)
    weight = covered.astype(np.float64)
    blur_mean = cv2.GaussianBlur(mean * weight, (0, 0), sigmaX=max(sigma_x, 1e-3), sigmaY=max(sigma_y, 1e-3),
                                 borderType=cv2.BORDER_CONSTANT)
    blur_weight = cv2.GaussianBlur(weight, (0, 0), sigmaX=max(sigma_x, 1e-3), sigmaY=max(sigma_y, 1e-3),
                                   borderType=cv2.BORDER_CONSTANT)
    return blur_mean, np.where(covered, np.maximum(blur_weight, 1e-12), 0.0)


def _tissue_at(ts: TileScores, shape: tuple[int, int]) -> np.ndarray:
    """The store's tissue mask sampled at the centres of a raster's pixels."""
    mask = ts.store.tissue_mask.astype(bool)
    h, w = shape
    mh, mw = mask.shape
    rows = np.minimum(((np.arange(h) + 0.5) * mh / h).astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mw / w).astype(np.int64), mw - 1)
    return mask[np.ix_(rows, cols)]
