"""Typed, frozen configs shared by the API, the CLI and YAML presets in ``configs/``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import ConfigError

Compression = Literal["jpeg", "lossless"]


@dataclass(frozen=True)
class TileSpec:
    """What patches to cut: resolution, size, overlap and how much tissue a patch needs.

    ``target_mpp`` is microns per pixel of the stored patches. The reader picks the pyramid level whose
    resolution is closest at or below the target; when that level is within ``mpp_tolerance``
    (relative) of the target, patches are read as they are, otherwise a larger region is read and
    resized down to ``patch_px``.

    ``mpp_check`` compares the slide's resolution with the one estimated from its nuclei
    (docs/resolution.md): "off" (default, nothing estimated), "warn" (a disagreement beyond 1.6x is
    reported and recorded in the store) or "strict" (such a slide is refused, nothing written).
    """

    target_mpp: float = 0.5
    patch_px: int = 224
    overlap_px: int = 0
    min_tissue: float = 0.25
    mpp_tolerance: float = 0.1
    mpp_check: Literal["off", "warn", "strict"] = "off"

    def __post_init__(self) -> None:
        if self.target_mpp <= 0:
            raise ConfigError(f"target mpp must be positive, got {self.target_mpp}", fix="pass e.g. --target-mpp 0.5")
        if self.patch_px < 8:
            raise ConfigError(f"patch size must be at least 8 px, got {self.patch_px}", fix="pass e.g. --patch 224")
        if not 0 <= self.overlap_px < self.patch_px:
            raise ConfigError(
                f"overlap must be in [0, patch size), got {self.overlap_px}",
                fix="pass an --overlap smaller than --patch",
            )
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError(f"min tissue fraction must be in [0, 1], got {self.min_tissue}")
        if not 0 <= self.mpp_tolerance < 1:
            raise ConfigError(f"mpp tolerance must be in [0, 1), got {self.mpp_tolerance}")
        if self.mpp_check not in ("off", "warn", "strict"):
            raise ConfigError(f"unknown mpp_check {self.mpp_check!r}", fix="use off, warn or strict")

    @property
    def stride_px(self) -> int:
        return self.patch_px - self.overlap_px


@dataclass(frozen=True)
class TissueSpec:
    """How tissue is found on a low-resolution thumbnail.

    Sizes are physical (microns) so a mask means the same at any scan resolution.
    """

    method: str = "otsu_saturation"
    thumbnail_mpp: float = 8.0
    max_thumbnail_side: int = 4096
    min_threshold: float = 0.06
    max_threshold: float = 0.15
    remove_pen: bool = True
    closing_um: float = 32.0
    min_area_um2: float = 20_000.0
    max_hole_area_um2: float = 200_000.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.thumbnail_mpp <= 0 or self.max_thumbnail_side < 16:
            raise ConfigError("thumbnail_mpp must be positive and max_thumbnail_side at least 16")
        if not 0 <= self.min_threshold <= self.max_threshold <= 1:
            raise ConfigError("tissue thresholds must satisfy 0 <= min_threshold <= max_threshold <= 1")


@dataclass(frozen=True)
class StoreSpec:
    """How patches are stored: JPEG (4:4:4, quality ``jpeg_quality``) or lossless, ``shard_tiles`` per file.

    The default quality 95 keeps every tissue tile of CMU-1-Small-Region above 40 dB PSNR against the
    slide (minimum 41 dB, median 43 dB, ~35 KB per 224 px tile); quality 90 drops the worst tiles to 38 dB.
    """

    compression: Compression = "jpeg"
    jpeg_quality: int = 95
    shard_tiles: int = 64

    def __post_init__(self) -> None:
        if self.compression not in ("jpeg", "lossless"):
            raise ConfigError(f"unknown compression {self.compression!r}", fix="use 'jpeg' or 'lossless'")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(
                f"JPEG quality must be 1..100, got {self.jpeg_quality}", fix="pass e.g. --jpeg-quality 90"
            )
        if self.shard_tiles < 1:
            raise ConfigError("shard_tiles must be at least 1")


@dataclass(frozen=True)
class TileOptions:
    """How a tiling run reads slides and spends the machine, beside what it cuts (:class:`TileSpec`), where
    the tissue is (:class:`TissueSpec`) and how patches are stored (:class:`StoreSpec`). Declared here
    once; the CLI's ``tile`` options, :func:`pathweak.tiling.tile_slides` and each slide's job carry it
    unchanged.

    - ``backend``: the slide reader (``auto``: OpenSlide where it can read the file, else tiffslide);
    - ``mpp``: the level-0 microns per pixel of every slide (None: each slide's own; ``"estimate"``: the
      resolution estimated from its nuclei, see docs/resolution.md);
    - ``roi`` / ``roi_classes``: a QuPath GeoJSON whose annotations (of those classes) replace tissue
      detection;
    - ``workers``: worker processes (over slides, shards of large slides, and one volume each);
    - ``fast_read``: read a TIFF's own JPEG tiles directly where the slide allows it;
    - ``encode_threads``: threads per worker encoding tiles while the next region is decoded (None: two
      where the cores allow, fewer where the workers fill them; 0: inline);
    - ``force``: re-tile even when an up-to-date store exists.
    """

    backend: str = "auto"
    mpp: float | str | None = None
    roi: str | None = None
    roi_classes: tuple[str, ...] | None = None
    workers: int = 1
    fast_read: bool = True
    encode_threads: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.roi is not None and not isinstance(self.roi, str):  # a Path is kept as its text (picklable, hashed)
            object.__setattr__(self, "roi", str(self.roi))
        if self.roi_classes is not None:
            object.__setattr__(self, "roi_classes", tuple(self.roi_classes) or None)
        if isinstance(self.mpp, str) and self.mpp != "estimate":
            raise ConfigError(
                f"mpp must be a number (um/px) or 'estimate', got {self.mpp!r}", fix="pass e.g. --mpp 0.25"
            )
        if isinstance(self.mpp, (int, float)) and not self.mpp > 0:
            raise ConfigError(f"mpp must be positive, got {self.mpp}", fix="pass e.g. --mpp 0.25")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}", fix="pass --workers 1 or more")
        if self.encode_threads is not None and self.encode_threads < 0:
            raise ConfigError(
                f"encode threads must be 0 or more, got {self.encode_threads}",
                fix="pass --encode-threads 0, 1, 2...",
            )


VolumeMode = Literal["3d", "slices"]
PLANES = ("axial", "coronal", "sagittal")  # slice normals: z, y, x of the RAS-oriented voxel grid


@dataclass(frozen=True)
class VolumeSpec:
    """How a 3D volume becomes patches (see docs/volumes.md).

    The volume is reoriented to RAS, resampled to ``spacing_mm`` (z, y, x; ``None`` keeps the native
    grid), intensities are mapped to uint8 by ``normalize`` and the foreground is found by
    ``foreground``. ``mode="3d"`` cuts (patch_depth, patch_px, patch_px) voxel patches; ``"slices"`` cuts
    patch_px x patch_px 2D patches from every ``slice_step``-th slice of each plane in ``planes``,
    stored as RGB (grey repeated) so 2D encoders read them like slide tiles. ``patch_px`` defaults to
    64 (3d) or 224 (slices); ``patch_depth`` to ``patch_px``.
    """

    mode: VolumeMode = "3d"
    spacing_mm: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    patch_px: int | None = None
    patch_depth: int | None = None
    overlap_px: int = 0
    planes: tuple[str, ...] = ("axial",)
    slice_step: int = 1
    min_foreground: float = 0.25
    normalize: Literal["percentile", "window", "zscore"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] | None = None
    zscore_clip: float = 3.0
    foreground: str = "otsu"
    closing_mm: float = 3.0
    min_component_mm3: float = 1000.0

    def __post_init__(self) -> None:
        fix = object.__setattr__  # YAML gives lists (or a single number): store tuples
        if self.spacing_mm is not None:
            sp = self.spacing_mm if isinstance(self.spacing_mm, (list, tuple)) else (self.spacing_mm,) * 3
            if len(sp) != 3 or not all(float(s) > 0 for s in sp):
                raise ConfigError(
                    f"spacing must be one or three positive numbers (mm), got {self.spacing_mm}",
                    fix="pass e.g. --spacing 1 or --spacing 2,1,1 (z,y,x)",
                )
            fix(self, "spacing_mm", tuple(float(s) for s in sp))
        planes = (self.planes,) if isinstance(self.planes, str) else tuple(self.planes)
        fix(self, "planes", planes)
        fix(self, "percentiles", tuple(float(p) for p in self.percentiles))
        if self.window is not None:
            fix(self, "window", tuple(float(w) for w in self.window))
        if self.mode not in ("3d", "slices"):
            raise ConfigError(f"unknown volume mode {self.mode!r}", fix="use '3d' or 'slices'")
        if not planes or any(p not in PLANES for p in planes):
            raise ConfigError(
                f"planes must be among {', '.join(PLANES)}, got {', '.join(planes) or 'none'}",
                fix="pass e.g. --plane axial --plane coronal",
            )
        for name in ("patch_px", "patch_depth"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}", fix="pass e.g. --patch 64")
        d, h, w = self.patch_shape
        if not 0 <= self.overlap_px < min(h, w) or (d > 1 and self.overlap_px >= d):
            raise ConfigError(
                f"overlap must be in [0, patch size), got {self.overlap_px}",
                fix="pass an --overlap smaller than --patch",
            )
        if self.slice_step < 1:
            raise ConfigError(f"slice step must be at least 1, got {self.slice_step}")
        if not 0 <= self.min_foreground <= 1:
            raise ConfigError(f"min foreground fraction must be in [0, 1], got {self.min_foreground}")
        if self.normalize not in ("percentile", "window", "zscore"):
            raise ConfigError(f"unknown normalisation {self.normalize!r}", fix="use percentile, window or zscore")
        if self.normalize == "window" and (
            self.window is None or len(self.window) != 2 or self.window[0] >= self.window[1]
        ):
            raise ConfigError(
                f"window normalisation needs a window LO,HI with LO < HI, got {self.window}",
                fix="pass e.g. --window -1000,1000 (CT, HU)",
            )
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"percentiles must satisfy 0 <= LO < HI <= 100, got {self.percentiles}")
        if self.zscore_clip <= 0 or self.closing_mm < 0 or self.min_component_mm3 < 0:
            raise ConfigError("zscore_clip must be positive, closing_mm and min_component_mm3 not negative")

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """(depth, height, width) in voxels of a 3D patch; (1, px, px) of a 2D slice patch."""
        px = self.patch_px or (64 if self.mode == "3d" else 224)
        if self.mode == "slices":
            return (1, px, px)
        return (self.patch_depth or px, px, px)

    @property
    def stride(self) -> tuple[int, int, int]:
        """Voxel step between neighbouring patches (z, y, x); along a slice plane's normal, ``slice_step``."""
        d, h, w = self.patch_shape
        if self.mode == "slices":
            return (self.slice_step, h - self.overlap_px, w - self.overlap_px)
        return (max(1, d - self.overlap_px), h - self.overlap_px, w - self.overlap_px)


C = TypeVar("C")


def as_dict(spec: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(spec)


def from_dict(cls: type[C], data: dict[str, Any], source: str | Path | None = None) -> C:
    """Build ``cls`` from a dict, naming unknown keys in a clear error."""
    check_keys(cls, data, source)
    return cls(**data)


def merge_options(
    section: dict[str, Any], given: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one precedence rule of every command that takes a config file: an option given on the command
    line (``given``, field -> value) wins over the file's section (``section``), which wins over
    ``defaults`` (field -> the value used when neither sets it; a field in none of them keeps its
    dataclass default)."""
    return {**(defaults or {}), **section, **given}


def parse_mpp(text: str | None) -> float | str | None:
    """A resolution override as written on a command line or in a manifest: empty (None: the slide's own),
    ``estimate``, or a positive number of microns per pixel. Anything else raises ValueError (the caller
    names where it was written)."""
    text = (text or "").strip()
    if not text or text.lower() == "estimate":
        return text.lower() or None
    value = float(text)  # ValueError for text that is no number
    if not value > 0:  # zero, negative, NaN
        raise ValueError(f"{text!r} is not positive")
    return value


def with_fields(spec: C, fields: dict[str, Any], source: str | Path | None = None) -> C:
    """``spec`` with some fields replaced by name (``fields``); a name that is not a field of the spec's
    class is one clear error naming the known ones."""
    if not fields:
        return spec
    check_keys(type(spec), fields, source)
    return dataclasses.replace(spec, **fields)  # type: ignore[type-var]


def check_keys(cls: type, data: dict[str, Any], source: str | Path | None = None) -> None:
    """Keys of ``data`` that are not fields of dataclass ``cls`` are one clear error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)}",
            path=source,
            fix=f"known keys: {', '.join(sorted(names))}",
        )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (sections such as ``tile:``, ``tissue:``, ``store:``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path, fix="check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of sections", path=path)
    return data
