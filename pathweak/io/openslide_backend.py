"""Slide backend on OpenSlide (Aperio, Hamamatsu, MIRAX, Philips, DICOM-WSI, generic tiled TIFF...)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import Slide, rgba_to_rgb_on_white

# OpenSlide's default tile cache (32 MiB) thrashes when a tiler reads row bands of a wide slide.
_CACHE_BYTES = 256 * 1024 * 1024


class OpenSlideSlide(Slide):
    """A slide read through openslide-python (OpenSlide 4 via openslide-bin)."""

    backend = "openslide"

    def __init__(self, path: str | Path, mpp: float | tuple[float, float] | None = None):
        super().__init__(path, mpp)
        import openslide

        self._osr = openslide.OpenSlide(str(path))
        try:
            self._osr.set_cache(openslide.OpenSlideCache(_CACHE_BYTES))
        except (AttributeError, openslide.OpenSlideError):  # OpenSlide < 4
            pass
        if self.vendor == "generic-tiff":  # OpenSlide shows any TIFF as RGB, even 16-bit multichannel stacks
            import tifffile

            from .tiffslide_backend import check_rgb_series

            try:
                with tifffile.TiffFile(path) as tif:
                    check_rgb_series(tif.series[0], self.path)
            except Exception:
                self._osr.close()
                raise

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._osr.level_dimensions)  # type: ignore[misc]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def properties(self) -> Mapping[str, Any]:
        return dict(self._osr.properties)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._osr.associated_images.keys())

    def associated_image(self, name: str) -> np.ndarray:
        return rgba_to_rgb_on_white(np.asarray(self._osr.associated_images[name].convert("RGBA")))

    def _metadata_mpp(self) -> tuple[float, float] | None:
        props = self._osr.properties
        try:
            return (float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"]))
        except (KeyError, ValueError):
            return None

    @property
    def vendor(self) -> str | None:
        return self._osr.properties.get("openslide.vendor")

    @property
    def objective_power(self) -> float | None:
        value = self._osr.properties.get("openslide.objective-power")
        try:
            return None if value is None else float(value)
        except ValueError:
            return None

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        import openslide

        try:
            rgba = np.asarray(self._osr.read_region(location, level, size))
        except openslide.OpenSlideError as exc:
            from ..errors import CorruptSlideError

            raise CorruptSlideError(
                f"OpenSlide cannot read the region at {location} level {level}: {exc}",
                path=self.path,
                fix="the file is damaged; re-export or re-scan the slide",
            ) from None
        return rgba_to_rgb_on_white(rgba)

    def _close(self) -> None:
        self._osr.close()
