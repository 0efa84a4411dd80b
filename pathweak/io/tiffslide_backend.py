"""Slide backend on tiffslide (plain and pyramidal TIFFs OpenSlide does not take, SVS, NDPI...)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnsupportedSlideError
from .base import Slide


class TiffSlideSlide(Slide):
    """A slide read through tiffslide (tifffile + imagecodecs)."""

    backend = "tiffslide"

    def __init__(self, path: str | Path, mpp: float | tuple[float, float] | None = None):
        super().__init__(path, mpp)
        import tiffslide

        self._ts = tiffslide.TiffSlide(str(path))
        try:
            series_index = self._ts.properties.get("tiffslide.series-index", 0) or 0
            check_rgb_series(self._ts.ts_tifffile.series[series_index], self.path)
        except Exception:
            self._ts.close()
            raise

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._ts.level_dimensions)  # type: ignore[misc]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._ts.level_downsamples)

    @property
    def properties(self) -> Mapping[str, Any]:
        return dict(self._ts.properties)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._ts.associated_images.keys())

    def associated_image(self, name: str) -> np.ndarray:
        return np.asarray(self._ts.associated_images[name].convert("RGB"))

    def _metadata_mpp(self) -> tuple[float, float] | None:
        props = self._ts.properties
        x, y = props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")
        if x is None or y is None:
            return None
        return (float(x), float(y))

    @property
    def vendor(self) -> str | None:
        return self._ts.properties.get("tiffslide.vendor") or "generic-tiff"

    @property
    def objective_power(self) -> float | None:
        value = self._ts.properties.get("tiffslide.objective-power")
        return None if value is None else float(value)

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        arr = np.asarray(self._ts.read_region(location, level, size, as_array=True, padding=True))
        arr = arr[..., :3] if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
        # tiffslide pads outside the image with black; the convention here is white
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        x0, y0 = int(location[0] / ds), int(location[1] / ds)
        vx, vy = max(0, min(size[0], lw - x0)), max(0, min(size[1], lh - y0))
        if vx < size[0] or vy < size[1] or x0 < 0 or y0 < 0:
            arr = arr.copy()
            arr[vy:, :] = 255
            arr[:, vx:] = 255
            if x0 < 0:
                arr[:, :-x0] = 255
            if y0 < 0:
                arr[:-y0, :] = 255
        return np.ascontiguousarray(arr, dtype=np.uint8)

    def _close(self) -> None:
        self._ts.close()


def check_rgb_series(series: Any, path: Path) -> None:
    """Refuse a tifffile series that is not 8-bit RGB(A) brightfield, e.g. a multiplex fluorescence stack."""
    axes = series.axes
    shape = dict(zip(axes, series.shape, strict=False))
    channels = shape.get("S", 1) * shape.get("C", 1) * shape.get("I", 1) * shape.get("Q", 1)
    if series.dtype != np.uint8 or channels not in (3, 4):
        raise UnsupportedSlideError(
            f"not an RGB brightfield slide: {channels} channel(s) of {series.dtype} (axes {axes})",
            path=path,
            fix="pathweak tiles 8-bit RGB slides; for multiplex fluorescence export an RGB rendering first",
        )
