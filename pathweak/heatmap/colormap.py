"""Colormaps (OpenCV's lookup tables as RGB), colouring a score raster, and a colour bar image."""

from __future__ import annotations

from functools import cache

import numpy as np

from ..errors import ConfigError

COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "jet", "hot", "parula", "twilight")
BACKGROUND = (255, 255, 255)


@cache
def lut(name: str) -> np.ndarray:
    """The (256, 3) uint8 RGB lookup table of colormap ``name``."""
    import cv2

    if name not in COLORMAPS:
        raise ConfigError(f"unknown colormap {name!r}", fix=f"use one of {', '.join(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{name.upper()}"))
    table = np.ascontiguousarray(bgr[:, 0, ::-1])
    table.flags.writeable = False
    return table


def value_range(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The colour scale's ends: given ones win; by default [0, 1] for scores inside it (probabilities,
    attention), else the finite minimum and maximum."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def lut_index(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Lookup-table index 0..255 of each value (clipped to the scale; NaN gives 0)."""
    scaled = (np.nan_to_num(values.astype(np.float64), nan=vmin) - vmin) / (vmax - vmin)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


def colorize(
    values: np.ndarray, cmap: str, vmin: float, vmax: float, background: tuple[int, int, int] = BACKGROUND
) -> np.ndarray:
    """RGB uint8 image of a score raster; NaN pixels get ``background``."""
    rgb = lut(cmap)[lut_index(values, vmin, vmax)]
    rgb[~np.isfinite(values)] = background
    return rgb


def colorbar(height: int, cmap: str, vmin: float, vmax: float, label: str, width: int = 110) -> np.ndarray:
    """A vertical colour bar (high values at the top) with the scale's ends and middle and a label, as
    an RGB image ``height`` pixels tall on white."""
    import cv2

    panel = np.full((height, width, 3), 255, np.uint8)
    top, bottom, bar_w, x = 24, max(height - 12, 40), 18, 8
    n = bottom - top
    ramp = np.linspace(255, 0, n).round().astype(np.uint8)
    panel[top:bottom, x : x + bar_w] = lut(cmap)[ramp][:, None, :]
    cv2.rectangle(panel, (x, top), (x + bar_w - 1, bottom - 1), (0, 0, 0), 1)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    for value, y in ((vmax, top), ((vmin + vmax) / 2, top + n // 2), (vmin, bottom - 1)):
        cv2.line(panel, (x + bar_w, y), (x + bar_w + 4, y), (0, 0, 0), 1)
        cv2.putText(panel, f"{value:.3g}", (x + bar_w + 7, y + 4), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    text = label if len(label) <= 16 else label[:15] + "~"
    cv2.putText(panel, text, (4, 14), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return panel
