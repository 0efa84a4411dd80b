"""RGB <-> CIE L*a*b* exactly as torchstain converts (sRGB companding, D65 white, L scaled by 2.55 and a, b
shifted by 128 as OpenCV does), for numpy arrays and torch tensors alike: the same arithmetic on either."""

from __future__ import annotations

from typing import Any

import numpy as np

RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
XYZ2RGB = np.linalg.inv(RGB2XYZ)
WHITE = np.array((0.95047, 1.0, 1.08883))


def _lib(x: Any) -> Any:
    """numpy or torch, whichever ``x`` belongs to."""
    if isinstance(x, np.ndarray):
        return np
    import torch

    return torch


def _const(x: Any, values: np.ndarray) -> Any:
    """``values`` as an array of ``x``'s kind, dtype and device."""
    if isinstance(x, np.ndarray):
        return values.astype(x.dtype)
    import torch

    return torch.as_tensor(values, dtype=x.dtype, device=x.device)


def _piecewise(x: Any, cut: float, above: Any, below: Any) -> Any:
    """``above(x)`` where ``x > cut``, else ``below(x)``: masked and in place on numpy (each branch computed
    only where it applies), ``where`` on torch (one fused pass on a GPU)."""
    if isinstance(x, np.ndarray):
        out = np.empty_like(x)
        mask = x > cut
        out[mask] = above(x[mask])
        out[~mask] = below(x[~mask])
        return out
    import torch

    return torch.where(x > cut, above(x), below(x))


def rgb_to_lab(rgb: Any) -> Any:
    """(..., 3) RGB floats in [0, 1] -> L*a*b* in OpenCV's scaling (L x 2.55, a and b + 128)."""
    xp = _lib(rgb)
    lin = _piecewise(rgb, 0.04045, lambda v: ((v + 0.055) / 1.055) ** 2.4, lambda v: v / 12.92)
    xyz = lin @ _const(rgb, RGB2XYZ.T) / _const(rgb, WHITE)
    f = _piecewise(xyz, 0.008856, _cbrt, lambda v: 7.787 * v + 16.0 / 116.0)
    x, y, z = f[..., 0], f[..., 1], f[..., 2]
    return xp.stack([(116.0 * y - 16.0) * 2.55, 500.0 * (x - y) + 128.0, 200.0 * (y - z) + 128.0], -1)


def lab_to_rgb(lab: Any) -> Any:
    """The inverse of :func:`rgb_to_lab`, clipped to [0, 1]."""
    xp = _lib(lab)
    y = (lab[..., 0] / 2.55 + 16.0) / 116.0
    x = (lab[..., 1] - 128.0) / 500.0 + y
    z = y - (lab[..., 2] - 128.0) / 200.0
    xyz = xp.stack([x, y, z], -1)
    xyz = _piecewise(xyz, 0.2068966, lambda v: v**3, lambda v: (v - 16.0 / 116.0) / 7.787) * _const(lab, WHITE)
    rgb = xyz @ _const(lab, XYZ2RGB.T)
    rgb = _piecewise(
        rgb, 0.0031308, lambda v: 1.055 * _at_least(v, 0.0031308) ** (1 / 2.4) - 0.055, lambda v: v * 12.92
    )
    return xp.clip(rgb, 0.0, 1.0)


def _at_least(x: Any, low: float) -> Any:
    """``x`` clipped below at ``low`` (torch's ``where`` evaluates both branches, so no NaN from a negative power)."""
    return np.maximum(x, low) if isinstance(x, np.ndarray) else x.clamp_min(low)


def _cbrt(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return np.cbrt(x)
    return x.sign() * x.abs().pow(1.0 / 3.0)
