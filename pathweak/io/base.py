"""The ``Slide`` protocol every whole-slide reader backend implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

MppSource = Literal["metadata", "user", "estimated"]

# A resolution outside this range is not a microscope's: a 72-dpi TIFF default reads as 352.8 um/px.
PLAUSIBLE_MPP = (0.01, 100.0)


class LevelReader(Protocol):
    """Reads RGB uint8 (h, w, 3) regions of a pyramid level, (x, y) in that level's pixels."""

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...


class Slide(ABC):
    """A whole-slide image opened by one backend.

    Coordinates passed to :meth:`read_region` are level-0 pixels (x, y), as in OpenSlide. Pixels come
    back as ``uint8`` RGB arrays of shape (height, width, 3); transparent (unscanned) areas are white.
    """

    backend: str = ""

    def __init__(self, path: str | Path, mpp: float | tuple[float, float] | None = None):
        self.path = Path(path)
        self._mpp_override = None if mpp is None else _as_pair(mpp)
        self._closed = False

    # -- metadata every backend supplies -------------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every pyramid level, level 0 first."""

    @property
    @abstractmethod
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of every level relative to level 0."""

    @property
    @abstractmethod
    def properties(self) -> Mapping[str, Any]:
        """The backend's raw metadata."""

    @property
    @abstractmethod
    def associated_image_names(self) -> tuple[str, ...]:
        """Names of the associated images (label, macro, thumbnail...)."""

    @abstractmethod
    def associated_image(self, name: str) -> np.ndarray:
        """One associated image as an RGB array."""

    @abstractmethod
    def _metadata_mpp(self) -> tuple[float, float] | None:
        """Microns per pixel at level 0 as recorded in the file, or None."""

    @property
    @abstractmethod
    def vendor(self) -> str | None:
        """The scanner vendor or file flavour the backend detected."""

    @property
    @abstractmethod
    def objective_power(self) -> float | None:
        """Nominal objective magnification, if recorded."""

    @abstractmethod
    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Backend read: RGB uint8 (h, w, 3) with transparent areas already made white."""

    @abstractmethod
    def _close(self) -> None: ...

    # -- derived ---------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def slide_id(self) -> str:
        """The file name without its extension(s)."""
        name = self.path.name
        for ext in (".ome.tiff", ".ome.tif"):
            if name.lower().endswith(ext):
                return name[: -len(ext)]
        return self.path.stem if self.path.suffix else name

    @property
    def metadata_mpp(self) -> tuple[float, float] | None:
        """The file's own resolution when it is plausible for a microscope, else None."""
        mpp = self._metadata_mpp()
        if mpp is None or not all(PLAUSIBLE_MPP[0] <= m <= PLAUSIBLE_MPP[1] for m in mpp):
            return None
        return mpp

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel (x, y) at level 0: the user override, else the file's, else None."""
        if self._mpp_override is not None:
            return self._mpp_override
        return self.metadata_mpp

    @property
    def mpp_source(self) -> MppSource | None:
        """Where :attr:`mpp` came from: ``"user"`` (override), ``"metadata"`` or None when unknown."""
        if self._mpp_override is not None:
            return "user"
        return "metadata" if self.metadata_mpp is not None else None

    def level_mpp(self, level: int) -> tuple[float, float] | None:
        """Microns per pixel at ``level`` (from level-0 mpp and the level's exact size ratio)."""
        if self.mpp is None:
            return None
        w0, h0 = self.dimensions
        w, h = self.level_dimensions[level]
        return (self.mpp[0] * w0 / w, self.mpp[1] * h0 / h)

    def best_level_for_downsample(self, downsample: float) -> int:
        """The highest level whose downsample does not exceed ``downsample`` (level 0 at least)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + 1e-6):
                best = i
        return best

    # -- pixels ----------------------------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 pixels (h, w, 3) of a ``size`` (w, h) region at ``level``; ``location`` is level 0."""
        self._check_open()
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range 0..{self.level_count - 1}")
        w, h = (int(size[0]), int(size[1]))
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        return self._read((int(location[0]), int(location[1])), level, (w, h))

    def get_thumbnail(self, max_size: int | tuple[int, int] = 1024) -> np.ndarray:
        """An RGB thumbnail no larger than ``max_size``, built from the best level in strips.

        Memory stays bounded for any slide size: the chosen level is read in horizontal strips and
        each strip is shrunk before the next is read, so level 0 is never loaded whole.
        """
        mw, mh = (max_size, max_size) if isinstance(max_size, int) else max_size
        w0, h0 = self.dimensions
        downsample = max(w0 / mw, h0 / mh, 1.0)
        return self.read_downsampled(downsample)

    def read_downsampled(self, downsample: float, reader: LevelReader | None = None) -> np.ndarray:
        """The whole slide at ``downsample`` relative to level 0, read in bounded strips (through
        ``reader``, e.g. a :class:`~pathweak.io.TiffTileReader` that decodes the level's tiles directly,
        when given; else through the backend)."""
        import cv2

        self._check_open()
        w0, h0 = self.dimensions
        out_w, out_h = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
        level = self.best_level_for_downsample(downsample)
        lw, lh = self.level_dimensions[level]
        out = np.empty((out_h, out_w, 3), np.uint8)
        # strips of about 8 M pixels at the read level, aligned to output rows
        rows_per_strip = max(1, int(8_000_000 / max(lw, 1) / (lh / out_h)))
        for oy in range(0, out_h, rows_per_strip):
            oy1 = min(out_h, oy + rows_per_strip)
            ly0, ly1 = math.floor(oy * lh / out_h), min(lh, math.ceil(oy1 * lh / out_h))
            ds = self.level_downsamples[level]
            if reader is not None:
                strip = reader.read(level, 0, ly0, lw, max(1, ly1 - ly0))
            else:
                strip = self._read((0, int(round(ly0 * ds))), level, (lw, max(1, ly1 - ly0)))
            out[oy:oy1] = cv2.resize(strip, (out_w, oy1 - oy), interpolation=cv2.INTER_AREA)
        return out

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._close()
            self._closed = True

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: slide is closed")

    def info(self) -> dict[str, Any]:
        """A summary of the metadata, as ``pathweak info`` prints it."""
        mpp = self.mpp
        return {
            "path": str(self.path),
            "slide_id": self.slide_id,
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 4) for d in self.level_downsamples],
            "mpp": None if mpp is None else [round(m, 6) for m in mpp],
            "mpp_source": self.mpp_source,
            "metadata_mpp_raw": _rounded(self._metadata_mpp()),
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_image_names),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, dimensions={self.dimensions}, levels={self.level_count})"


def _as_pair(mpp: float | tuple[float, float]) -> tuple[float, float]:
    pair = (float(mpp), float(mpp)) if isinstance(mpp, (int, float)) else (float(mpp[0]), float(mpp[1]))
    if not all(m > 0 and math.isfinite(m) for m in pair):
        raise ValueError(f"mpp must be positive, got {mpp}")
    return pair


def _rounded(mpp: tuple[float, float] | None) -> list[float] | None:
    return None if mpp is None else [round(m, 6) for m in mpp]


def rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite a non-premultiplied RGBA array onto white (OpenSlide marks unscanned areas alpha 0)."""
    rgb = np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3]
    see_through = alpha < 255
    if not see_through.any():
        return rgb
    a = alpha[see_through][:, None].astype(np.uint16)
    rgb[see_through] = ((rgb[see_through].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return rgb
