"""Applying a normalisation: tiles of one slide (its :class:`SlideStain`) mapped to a target stain, on numpy
arrays (the CPU) or torch tensors (any device, batched: the extraction path), with the same arithmetic.

Macenko is linear in optical density: ``OD_out = OD_in @ A`` with one 3 x 3 matrix per slide
(``A = pinv(M_source) diag(max_c_target / max_c_source) M_target``), so a batch costs a log, a 3 x 3 product
and an exp per pixel. Vahadane keeps the concentrations non-negative between the two products (as
torch-staintools does). Reinhard standardises each L*a*b* channel with the slide's statistics and rescales it
to the target's. Outputs are uint8, truncated as the reference libraries do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .estimate import MACENKO_IO, SlideStain
from .lab import lab_to_rgb, rgb_to_lab

CPU_CHUNK = 4  # tiles per numpy pass (measured: 3x faster than whole batches of 256 on the CPU)


@dataclass(frozen=True)
class StainTransform:
    """``source`` (one slide's stain) -> ``target`` (the reference's), by their common method."""

    source: SlideStain
    target: SlideStain

    def __post_init__(self) -> None:
        if self.source.method != self.target.method:
            raise ConfigError(f"cannot map a {self.source.method} estimate onto a {self.target.method} target")

    @property
    def method(self) -> str:
        return self.source.method

    @property
    def unmix(self) -> np.ndarray:
        """(3, 2): optical density -> the source's stain concentrations (least squares)."""
        assert self.source.matrix is not None
        return np.linalg.pinv(np.asarray(self.source.matrix, np.float64))

    @property
    def scale(self) -> np.ndarray:
        """(2,): target over source percentile concentrations."""
        assert self.source.max_c is not None and self.target.max_c is not None
        return np.asarray(self.target.max_c, np.float64) / np.asarray(self.source.max_c, np.float64)

    @property
    def od_matrix(self) -> np.ndarray:
        """(3, 3): optical density in -> optical density out (macenko: a linear map)."""
        assert self.target.matrix is not None
        return (self.unmix * self.scale[None, :]) @ np.asarray(self.target.matrix, np.float64)

    def __call__(self, tiles: Any) -> Any:
        """uint8 RGB tiles (..., H, W, 3) normalised: a numpy array for a numpy array, a tensor on the
        same device for a tensor."""
        if isinstance(tiles, np.ndarray):
            return self._numpy(tiles)
        return self._torch(tiles)

    def _numpy(self, tiles: np.ndarray) -> np.ndarray:
        if tiles.dtype != np.uint8 or tiles.shape[-1] != 3:
            raise ConfigError(f"stain normalisation needs uint8 RGB tiles, got {tiles.dtype} {tiles.shape}")
        if tiles.ndim == 4 and len(tiles) > CPU_CHUNK:  # a few tiles at a time: the temporaries stay in cache
            out = np.empty_like(tiles)
            for i in range(0, len(tiles), CPU_CHUNK):
                out[i : i + CPU_CHUNK] = self._numpy(tiles[i : i + CPU_CHUNK])
            return out
        if self.method == "reinhard":
            x = rgb_to_lab(tiles.astype(np.float32) / np.float32(255.0))
            out = lab_to_rgb(self._reinhard_lab(x, np.float32))
            return (out * 255).astype(np.uint8)
        if self.method == "macenko":
            od = -np.log((tiles.astype(np.float64) + 1.0) / MACENKO_IO)
            out = MACENKO_IO * np.exp(-(od @ self.od_matrix))
        else:
            od = -np.log(np.maximum(tiles, 1).astype(np.float64) / 255.0)
            conc = np.maximum(od @ self.unmix, 0) * self.scale
            out = 255.0 * np.exp(-(conc @ np.asarray(self.target.matrix, np.float64)))
        return np.clip(out, 0, 255).astype(np.uint8)

    def _reinhard_lab(self, lab: Any, dtype: Any) -> Any:
        s, t = self.source, self.target
        assert s.means is not None and s.stds is not None and t.means is not None and t.stds is not None
        scale = np.array([2.55, 1.0, 1.0])  # L is compared on 0-100, a and b centred on 0
        shift = np.array([0.0, 128.0, 128.0])
        gain = np.asarray(t.stds) / np.maximum(np.asarray(s.stds), 1e-12)
        # ((lab - shift) / scale - mean_s) * gain + mean_t, written back in OpenCV scaling: one affine map
        a = gain
        b = (np.asarray(t.means) - np.asarray(s.means) * gain) * scale + shift - shift * gain
        if isinstance(lab, np.ndarray):
            return lab * a.astype(dtype) + b.astype(dtype)
        import torch

        return lab * torch.as_tensor(a, dtype=lab.dtype, device=lab.device) + torch.as_tensor(
            b, dtype=lab.dtype, device=lab.device
        )

    def _torch(self, tiles: Any) -> Any:
        import torch

        if tiles.dtype != torch.uint8 or tiles.shape[-1] != 3:
            raise ConfigError(f"stain normalisation needs uint8 RGB tiles, got {tiles.dtype} {tuple(tiles.shape)}")
        x = tiles.float()
        if self.method == "reinhard":
            out = lab_to_rgb(self._reinhard_lab(rgb_to_lab(x / 255.0), np.float32))
            return (out * 255).to(torch.uint8)

        def const(a: np.ndarray) -> Any:
            return torch.as_tensor(a, dtype=torch.float32, device=tiles.device)

        if self.method == "macenko":
            out = MACENKO_IO * torch.exp(-(-torch.log((x + 1.0) / MACENKO_IO) @ const(self.od_matrix)))
        else:
            conc = (-torch.log(x.clamp_min(1.0) / 255.0) @ const(self.unmix)).clamp_min(0) * const(self.scale)
            out = 255.0 * torch.exp(-(conc @ const(np.asarray(self.target.matrix))))
        return out.clamp(0, 255).to(torch.uint8)
