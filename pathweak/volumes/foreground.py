"""Foreground (body) masks of volumes: a voxel classifier, then shared 3D clean-up.

Register a classifier with ``@FOREGROUND_METHODS.register(name)``: it takes the (z, y, x) float image
and returns a boolean mask and a record of its parameters. The clean-up removes components smaller
than ``min_component_mm3``, closes gaps up to ``closing_mm`` and fills enclosed holes (in 3D and in
every axial slice, so a skull's inside or a body's lungs count as foreground). Sizes are in mm, so a
mask means the same at any spacing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._registry import Registry
from ..config import VolumeSpec

Classifier = Callable[[np.ndarray], tuple[np.ndarray, dict[str, Any]]]
FOREGROUND_METHODS: Registry[Classifier] = Registry("foreground method")


@FOREGROUND_METHODS.register("otsu")
def otsu(image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Voxels brighter than Otsu's threshold of the whole volume (a constant volume has no foreground)."""
    from skimage.filters import threshold_otsu

    if image.size == 0 or float(image.min()) == float(image.max()):
        return np.zeros(image.shape, bool), {"threshold": None}
    threshold = float(threshold_otsu(image))
    return image > threshold, {"threshold": threshold}


@FOREGROUND_METHODS.register("all")
def everything(image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Every voxel is foreground (tile the whole volume)."""
    return np.ones(image.shape, bool), {}


def foreground_mask(
    image: np.ndarray, spacing_zyx: tuple[float, float, float], spec: VolumeSpec
) -> tuple[np.ndarray, dict[str, Any]]:
    """The cleaned foreground mask of ``image`` (z, y, x) and a JSON-ready record of how it was made."""
    mask, params = FOREGROUND_METHODS.get(spec.foreground)(image)
    if spec.foreground != "all":
        mask = clean_volume_mask(mask, spacing_zyx, spec.closing_mm, spec.min_component_mm3)
    record = {
        "method": spec.foreground,
        **params,
        "closing_mm": spec.closing_mm,
        "min_component_mm3": spec.min_component_mm3,
        "fraction": float(mask.mean()) if mask.size else 0.0,
    }
    return mask, record


def clean_volume_mask(
    mask: np.ndarray, spacing_zyx: tuple[float, float, float], closing_mm: float, min_component_mm3: float
) -> np.ndarray:
    """Small components removed, gaps closed (a ball of radius ``closing_mm``), holes filled."""
    from scipy import ndimage

    voxel_mm3 = float(np.prod(spacing_zyx))
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes * voxel_mm3 >= min_component_mm3
        keep[0] = False
        mask = keep[labels]
    if closing_mm > 0 and mask.any():
        # closing with a ball of closing_mm through distance transforms: exact in mm at any (anisotropic)
        # spacing, linear in the voxel count, and no erosion at the volume's faces
        dilated = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) <= closing_mm
        if not dilated.all():
            mask = ndimage.distance_transform_edt(dilated, sampling=spacing_zyx) > closing_mm
        else:
            mask = dilated
    mask = ndimage.binary_fill_holes(mask)
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask
