"""Pixel classifiers that mark tissue on an RGB thumbnail; register new ones with ``@TISSUE_METHODS.register``.

Each method takes an RGB uint8 array and a :class:`~pathweak.config.TissueSpec` and returns a boolean
mask of the same height and width. Clean-up (closing, small objects, holes) is shared and applied
afterwards by :func:`pathweak.tissue.detect_tissue`. Work stays in uint8 (OpenCV) so a 4096 x 4096
thumbnail takes a few tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._registry import Registry
from ..config import TissueSpec

TissueMethod = Callable[[np.ndarray, TissueSpec], np.ndarray]
TISSUE_METHODS: Registry[TissueMethod] = Registry("tissue method")


def _hsv(rgb: np.ndarray) -> np.ndarray:
    """HSV of an RGB uint8 image, each channel uint8 over its full 0..255 range (hue wraps at 256)."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2HSV_FULL)


def _otsu(channel: np.ndarray, low: float, high: float) -> float:
    """Otsu's threshold of a uint8 channel, as a fraction of 255, clipped to [low, high]
    (a uniform image gives ``low``)."""
    import cv2

    if channel.size == 0 or int(channel.max()) == int(channel.min()):
        return low
    t, _ = cv2.threshold(channel.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(np.clip(t / 255.0, low, high))


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Marker ink: green/blue pens (hue 0.2-0.6) and red pens (hue beyond eosin's pink, > 0.95 or
    < 0.03), both with saturation > 0.15, and near-black ink (value < 0.25). Hue runs 0..1 from red
    through green and blue back to red."""
    hsv = _hsv(rgb)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    saturated = s > 38  # 0.15
    green_blue = (h > 51) & (h < 153) & saturated  # 0.2 .. 0.6
    red = ((h > 242) | (h < 8)) & saturated  # > 0.95 or < 0.03
    return green_blue | red | (v < 64)  # value < 0.25


def _threshold_mask(channel: np.ndarray, rgb: np.ndarray, spec: TissueSpec) -> np.ndarray:
    import cv2

    channel = cv2.medianBlur(np.ascontiguousarray(channel), 3)
    mask = channel > _otsu(channel, spec.min_threshold, spec.max_threshold) * 255
    if spec.remove_pen:
        mask &= ~pen_mask(rgb)
    return mask


@TISSUE_METHODS.register("otsu_saturation")
def otsu_saturation(rgb: np.ndarray, spec: TissueSpec) -> np.ndarray:
    """Tissue is saturated (stained) and glass is grey-white: Otsu on HSV saturation, clipped to
    [min_threshold, max_threshold] so an empty or all-tissue image is not split in two, minus pen ink."""
    return _threshold_mask(_hsv(rgb)[..., 1], rgb, spec)


@TISSUE_METHODS.register("otsu_gray")
def otsu_gray(rgb: np.ndarray, spec: TissueSpec) -> np.ndarray:
    """Tissue is darker than glass: Otsu on grey-level darkness (for faint or unstained sections)."""
    import cv2

    darkness = 255 - cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    return _threshold_mask(darkness, rgb, spec)


@TISSUE_METHODS.register("all")
def everything(rgb: np.ndarray, spec: TissueSpec) -> np.ndarray:
    """Every pixel is tissue (pre-cropped images, or tiling the whole slide)."""
    return np.ones(rgb.shape[:2], bool)
