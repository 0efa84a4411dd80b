"""Haematoxylin optical density and an H&E check, by colour deconvolution (Ruifrok & Johnston 2001).

Pixels are converted to optical density (Beer-Lambert: OD = -log10(I / 255)) through a lookup table and
unmixed with scikit-image's H&E-DAB matrix (``skimage.color.hed_from_rgb``, the Ruifrok & Johnston
stain vectors), so a 512 x 512 region costs a few milliseconds. The H&E check asks whether the tissue's
optical density lies in the plane spanned by the haematoxylin and eosin vectors with non-negative
amounts of both: brown DAB (IHC), other special stains, grey or fluorescence images and ordinary
photographs do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# OD per 8-bit value (0 is clipped to 1 to keep it finite); natural log, as skimage's rgb2hed
_OD_LUT = -np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0).astype(np.float32)

# Ruifrok & Johnston's stain vectors (skimage.color.rgb_from_hed rows), normalised
_H = np.array([0.65, 0.70, 0.29], np.float32)
_E = np.array([0.07, 0.99, 0.11], np.float32)
_H /= np.linalg.norm(_H)
_E /= np.linalg.norm(_E)
_HE = np.stack([_H, _E], 1)  # (3, 2)
_HE_PINV = np.linalg.pinv(_HE).astype(np.float32)  # (2, 3)

TISSUE_OD = 0.25  # summed RGB optical density above which a pixel is stained tissue, not glass
HE_RESIDUAL = 0.35  # relative OD residual off the H-E plane still counted as H&E
MIN_HE_FRACTION = 0.3  # share of the tissue's OD that must be explained by H and E


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Float32 (h, w, 3) optical density of an RGB uint8 image."""
    return _OD_LUT[np.ascontiguousarray(rgb[..., :3])]


def total_od(od: np.ndarray) -> np.ndarray:
    """The summed optical density (h, w) of the three channels."""
    return _mix(od, np.ones(3, np.float32))


def haematoxylin(od: np.ndarray) -> np.ndarray:
    """The haematoxylin amount (h, w) of an optical-density image: the H channel of scikit-image's
    colour deconvolution (``hed_from_rgb``, H, E and DAB unmixed), negative amounts clipped to 0."""
    from skimage.color import hed_from_rgb

    h = _mix(od, hed_from_rgb[:, 0].astype(np.float32))
    return np.maximum(h, 0.0, out=h)


def _mix(od: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``od @ weights`` over the channel axis (OpenCV's per-pixel transform: faster than numpy's strided sum)."""
    import cv2

    if od.ndim != 3 or od.shape[0] * od.shape[1] == 0:
        return np.asarray(od @ weights, np.float32)
    out = cv2.transform(np.ascontiguousarray(od, np.float32), weights.reshape(1, 3).astype(np.float32))
    return out.reshape(od.shape[:2])


@dataclass(frozen=True)
class StainCheck:
    """Whether the tissue pixels look like H&E: ``he_fraction`` is the OD-weighted share of tissue
    pixels whose colour H and E explain (residual under ``HE_RESIDUAL``, neither amount clearly negative)."""

    is_he: bool
    he_fraction: float
    tissue_pixels: int


def check_he(od: np.ndarray, tissue: np.ndarray, max_pixels: int = 50_000) -> StainCheck:
    """The H&E check on the ``tissue`` pixels of ``od`` (an even subsample of at most ``max_pixels``)."""
    px = od[tissue]
    n = len(px)
    if n == 0:
        return StainCheck(False, 0.0, 0)
    if n > max_pixels:
        px = px[:: n // max_pixels]
    coef = px @ _HE_PINV.T  # (n, 2)
    resid = np.linalg.norm(px - coef @ _HE.T, axis=1) / np.maximum(np.linalg.norm(px, axis=1), 1e-6)
    negative = coef.min(1) < -0.1 * np.abs(coef).max(1)
    good = (resid < HE_RESIDUAL) & ~negative
    mass = px.sum(1)
    frac = float(np.average(good, weights=mass))
    return StainCheck(frac >= MIN_HE_FRACTION, round(frac, 3), int(n))
