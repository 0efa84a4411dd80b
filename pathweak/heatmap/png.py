"""The heatmap blended over the slide's thumbnail, with a colour bar, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._atomic import atomic_file
from .colormap import colorbar, colorize, value_range
from .stitch import Heatmap


def overlay_image(
    heatmap: Heatmap,
    thumbnail: np.ndarray,
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """RGB image: the thumbnail (resized to the raster) with the coloured scores blended in at
    ``alpha`` where there are scores, and a colour bar on the right."""
    import cv2

    h, w = heatmap.values.shape
    base = thumbnail[..., :3]
    if base.shape[:2] != (h, w):
        base = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA if base.shape[0] > h else cv2.INTER_LINEAR)
    lo, hi = value_range(heatmap.values, vmin, vmax)
    colour = colorize(heatmap.values, cmap, lo, hi)
    scored = np.isfinite(heatmap.values)[..., None]
    blended = np.where(scored, base * (1 - alpha) + colour * alpha, base).round().astype(np.uint8)
    height = max(h, 160)
    canvas = np.full((height, w, 3), 255, np.uint8)
    canvas[:h] = blended
    return np.concatenate([canvas, colorbar(height, cmap, lo, hi, heatmap.name)], axis=1)


def write_png(heatmap: Heatmap, thumbnail: np.ndarray, path: str | Path, **options: object) -> Path:
    """Write :func:`overlay_image` as a PNG, atomically."""
    import cv2

    path = Path(path)
    ok, data = cv2.imencode(".png", overlay_image(heatmap, thumbnail, **options)[..., ::-1])  # type: ignore[arg-type]
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB image
        raise RuntimeError("PNG encoding failed")
    with atomic_file(path, "wb") as f:
        f.write(data.tobytes())
    return path
