"""``TissueMask``: a low-resolution tissue mask tied to level-0 coordinates, its clean-up and polygons."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np


@dataclass
class TissueMask:
    """A boolean mask at thumbnail scale; mask pixel (r, c) covers level-0 pixels
    [c * downsample[0], (c + 1) * downsample[0]) x [r * downsample[1], (r + 1) * downsample[1])."""

    mask: np.ndarray
    downsample: tuple[float, float]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    thumbnail: np.ndarray | None = None
    artifacts: np.ndarray | None = None  # uint8 class ids an artefact model removed (0: kept), same grid

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the mask (the whole slide) that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @cached_property
    def polygons(self) -> list[Any]:
        """Tissue regions as shapely Polygons (with holes) in level-0 pixel coordinates."""
        return mask_to_polygons(self.mask, self.downsample)

    @cached_property
    def _integral(self) -> np.ndarray:
        import cv2

        return cv2.integral(self.mask.astype(np.uint8), sdepth=cv2.CV_64F)

    def fraction_in_boxes(self, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        """Tissue fraction inside level-0 boxes [x0, x1) x [y0, y1), with fractional edge pixels.

        The integral image is sampled bilinearly at the box corners, so a box that covers only part of
        a mask pixel counts that part.
        """
        sx, sy = self.downsample
        h, w = self.mask.shape
        fx0, fx1 = np.clip(np.asarray(x0) / sx, 0, w), np.clip(np.asarray(x1) / sx, 0, w)
        fy0, fy1 = np.clip(np.asarray(y0) / sy, 0, h), np.clip(np.asarray(y1) / sy, 0, h)
        total = self._area(fx1, fy1) - self._area(fx0, fy1) - self._area(fx1, fy0) + self._area(fx0, fy0)
        box = (np.asarray(x1) - np.asarray(x0)) / sx * (np.asarray(y1) - np.asarray(y0)) / sy
        return np.clip(np.where(box > 0, total / np.maximum(box, 1e-12), 0.0), 0.0, 1.0)

    def _area(self, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        """Tissue area (in mask pixels) of [0, fx) x [0, fy), bilinear between integer corners."""
        ii = self._integral
        h, w = self.mask.shape
        x0 = np.clip(np.floor(fx).astype(int), 0, w - 1) if w else np.zeros_like(fx, int)
        y0 = np.clip(np.floor(fy).astype(int), 0, h - 1) if h else np.zeros_like(fy, int)
        tx, ty = fx - x0, fy - y0
        a00, a01 = ii[y0, x0], ii[y0, x0 + 1]
        a10, a11 = ii[y0 + 1, x0], ii[y0 + 1, x0 + 1]
        return a00 * (1 - tx) * (1 - ty) + a01 * tx * (1 - ty) + a10 * (1 - tx) * ty + a11 * tx * ty


def clean_mask(
    mask: np.ndarray, px_um: float, closing_um: float, min_area_um2: float, max_hole_area_um2: float
) -> np.ndarray:
    """Morphological clean-up at a mask resolution of ``px_um`` microns per pixel: closing (joins
    fragments), removal of objects smaller than ``min_area_um2`` and filling of holes smaller than
    ``max_hole_area_um2``."""
    import cv2

    mask = mask.astype(bool)
    radius = int(round(closing_um / px_um / 2))
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        padded = np.pad(mask.astype(np.uint8), radius + 1)
        closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
        mask = closed[radius + 1 : -radius - 1, radius + 1 : -radius - 1].astype(bool)
    px_area = px_um * px_um
    min_px = int(min_area_um2 / px_area)
    if min_px > 0:
        mask = remove_small_objects(mask, min_px)
    hole_px = int(max_hole_area_um2 / px_area)
    if hole_px > 0:
        mask = fill_holes(mask, hole_px)
    return mask


def remove_small_objects(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Drop tissue components (8-connected) of at most ``max_px`` pixels."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    keep = stats[:, cv2.CC_STAT_AREA] > max_px
    keep[0] = False  # label 0 is background
    return keep[labels]


def fill_holes(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Fill background regions of at most ``max_px`` pixels that are enclosed by tissue (a region that
    touches the image border is open glass, not a hole, whatever its size)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    if n <= 1:
        return mask
    h, w = mask.shape
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    touches = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    fill = (area <= max_px) & ~touches
    fill[0] = False  # label 0 is tissue
    return mask | fill[labels]


def mask_to_polygons(mask: np.ndarray, downsample: tuple[float, float]) -> list[Any]:
    """Outer contours with their holes as valid shapely Polygons, scaled to level-0 pixels."""
    import cv2
    from shapely.geometry import Polygon
    from shapely.validation import make_valid

    m = np.pad(mask.astype(np.uint8), 1)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    sx, sy = downsample

    def ring(c: np.ndarray) -> np.ndarray:
        pts = c[:, 0, :].astype(np.float64) - 1.0 + 0.5  # undo padding; pixel centres
        return np.column_stack([pts[:, 0] * sx, pts[:, 1] * sy])

    polygons = []
    for i, c in enumerate(contours):
        if hierarchy[0, i, 3] != -1 or len(c) < 3:
            continue  # holes are collected with their parent
        holes = []
        child = hierarchy[0, i, 2]
        while child != -1:
            if len(contours[child]) >= 3:
                holes.append(ring(contours[child]))
            child = hierarchy[0, child, 0]
        poly = make_valid(Polygon(ring(c), holes))
        for part in getattr(poly, "geoms", [poly]):
            if part.geom_type == "Polygon" and part.area > 0:
                polygons.append(part)
    return polygons


def rasterize_polygons(geometries: list[Any], shape: tuple[int, int], downsample: tuple[float, float]) -> np.ndarray:
    """Burn level-0 shapely (Multi)Polygons into a boolean mask of ``shape`` at ``downsample``: a mask
    pixel is set when its centre lies inside (exactly so for edges on pixel boundaries, holes included).

    OpenCV's fillPoly also sets pixels its outline touches, which adds half a pixel on every side; each
    ring is therefore shrunk by half a pixel (mitred, so boxes stay boxes) before it is filled.
    """
    import cv2
    from shapely.geometry import Polygon

    out = np.zeros(shape, np.uint8)
    sx, sy = downsample

    def fill(ring: Any, value: int) -> None:
        inner = Polygon(np.asarray(ring.coords, dtype=np.float64)[:, :2] / (sx, sy)).buffer(-0.5, join_style="mitre")
        for part in getattr(inner, "geoms", [inner]):
            if part.geom_type == "Polygon" and not part.is_empty:
                pts = np.round((np.asarray(part.exterior.coords) - 0.5) * 16).astype(np.int32)
                cv2.fillPoly(out, [pts], value, lineType=cv2.LINE_8, shift=4)

    for geom in geometries:
        for poly in getattr(geom, "geoms", [geom]):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            fill(poly.exterior, 1)
            for hole in poly.interiors:
                fill(hole, 0)
    return out.astype(bool)
