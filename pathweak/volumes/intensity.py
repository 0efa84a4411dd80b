"""Intensity normalisation of a volume to uint8, recorded so stored values map back to intensities.

Every method chooses an intensity range ``[lo, hi]`` and maps it linearly onto 0..255 (values outside
are clipped): ``window`` takes it as given (e.g. CT -1000..1000 HU), ``percentile`` uses percentiles of
the foreground voxels (default 0.5 and 99.5), ``zscore`` uses mean -/+ ``zscore_clip`` standard
deviations of the foreground. So ``intensity ~= lo + stored * (hi - lo) / 255`` in every case, and
``(stored / 255) * 2 * clip - clip`` is the z-score for ``zscore``. This equals MONAI's
``ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0, b_max=255, clip=True)`` followed by rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import VolumeSpec


def intensity_range(image: np.ndarray, foreground: np.ndarray, spec: VolumeSpec) -> dict[str, Any]:
    """The ``[lo, hi]`` range of ``spec.normalize`` and what it was computed from (a JSON-ready record)."""
    values = image[foreground] if foreground.any() else image.ravel()
    record: dict[str, Any] = {
        "method": spec.normalize,
        "statistics_over": "foreground" if foreground.any() else "all voxels",
    }
    if spec.normalize == "window":
        assert spec.window is not None
        lo, hi = spec.window
        record.update(window=list(spec.window), statistics_over=None)
    elif spec.normalize == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, spec.percentiles))
        record.update(percentiles=list(spec.percentiles))
    else:
        mean, std = float(values.mean()), float(values.std())
        std = std if std > 0 else 1.0
        lo, hi = mean - spec.zscore_clip * std, mean + spec.zscore_clip * std
        record.update(mean=mean, std=std, zscore_clip=spec.zscore_clip)
    if not hi > lo:  # a constant image
        hi = lo + 1.0
    record.update(lo=float(lo), hi=float(hi), dtype="uint8", stored_to_intensity=[(hi - lo) / 255.0, float(lo)])
    return record


def to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image`` mapped linearly from ``[lo, hi]`` onto 0..255, clipped and rounded to uint8."""
    scaled = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
