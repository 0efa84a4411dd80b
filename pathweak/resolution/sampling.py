"""How much the nucleus measurement itself inflates small profiles, measured on drawn discs of known size.

The segmentation (``estimate.measure``: Otsu's threshold, blur, upsampling of coarse images) measures a
disc of true diameter ``D`` px as a little wider, and the smaller the disc the more so: a profile a few
pixels wide is mostly edge, its edge pixels are partly covered, and Otsu's threshold of an image of small
blurred discs sits below their half height. So an image resampled 4x coarser read ~0.86 x its truth
where the same image at its own scale read ~1.0 (``nuclei-v3``): the estimate did not follow the pixel
size exactly.

``SAMPLING_BIAS`` is that inflation, taken from drawn discs: grey discs of known diameter (a log-normal
spread of sizes, sd ``discs.SPREAD`` in log, so the area-weighted median does not jump with the pixel count)
drawn with ``discs.SUPERSAMPLE`` x supersampling and area-averaged to the pixel grid (a pixel integrates the
light over its area, as a scanner's sensor does and as OpenCV's ``INTER_AREA`` resampling does), then
measured by the estimator's own ``measure``. Each entry is (measured px, factor): the measured
area-weighted median diameter and measured / true, relative to the same ratio for large discs (``D`` of
10-14 px, where it levels off at ~1.06, mostly the size spread itself). The estimate divides the
measured size by the factor, i.e. multiplies ``mpp`` by it (``nuclei-v4``). Relative, because the
absolute calibration is the size constant's (``NUCLEUS_PROFILE_UM``), checked on images at their own
scale; the correction only makes a small profile read like a large one.

No benchmark image is used: the table is what :func:`pathweak.resolution.discs.bias_table` prints
(``python -m pathweak.resolution.discs``), and ``tests/resolution/test_sampling.py`` checks it against a fresh
measurement. The discs are noise-free, so this is the geometric part of the bias only: real tissue,
whose texture adds to it, still reads a few percent low on coarse scans (docs/resolution.md, Limits).
"""

from __future__ import annotations

import math

import numpy as np

# (measured area-weighted median diameter in px, measured / true relative to large discs), from
# bias_table(): diameters 2.0, 2.25, 2.5, 2.75, 3, 3.5, 4, 5, 6, 8, 10, 12, 14 px, seeds 0-7, 512 px regions.
# Below the first entry its value holds (under MIN_NUCLEUS_PX: never answered); sampling_bias is never under 1.
SAMPLING_BIAS: tuple[tuple[float, float], ...] = (
    (2.459, 1.160),
    (2.689, 1.128),
    (2.913, 1.100),
    (3.144, 1.079),
    (3.385, 1.065),
    (3.883, 1.047),
    (4.388, 1.035),
    (5.419, 1.023),
    (6.448, 1.014),
    (8.509, 1.004),
    (10.622, 1.002),
    (12.703, 0.999),
    (14.819, 0.999),
)


def sampling_bias(measured_px: float) -> float:
    """The factor by which the measurement inflates a profile measured ``measured_px`` wide, interpolated in
    log size from ``SAMPLING_BIAS``; 1 from the reference sizes up (their entries, 0.999-1.002, are 1 within
    the noise of the drawing)."""
    xs = np.log([m for m, _ in SAMPLING_BIAS])
    ys = [f for _, f in SAMPLING_BIAS]
    return max(1.0, float(np.interp(math.log(max(measured_px, 1e-6)), xs, ys)))
