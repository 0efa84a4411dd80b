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
    """

    target_mpp: float = 0.5
    patch_px: int = 224
    overlap_px: int = 0
    min_tissue: float = 0.25
    mpp_tolerance: float = 0.1

    def __post_init__(self) -> None:
        if self.target_mpp <= 0:
            raise ConfigError(f"target mpp must be positive, got {self.target_mpp}", fix="pass e.g. --target-mpp 0.5")
        if self.patch_px < 8:
            raise ConfigError(f"patch size must be at least 8 px, got {self.patch_px}", fix="pass e.g. --patch 224")
        if not 0 <= self.overlap_px < self.patch_px:
            raise ConfigError(
                f"overlap must be in [0, patch size), got {self.overlap_px}", fix="pass an --overlap smaller than --patch"
            )
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError(f"min tissue fraction must be in [0, 1], got {self.min_tissue}")
        if not 0 <= self.mpp_tolerance < 1:
            raise ConfigError(f"mpp tolerance must be in [0, 1), got {self.mpp_tolerance}")

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
            raise ConfigError(f"JPEG quality must be 1..100, got {self.jpeg_quality}", fix="pass e.g. --jpeg-quality 90")
        if self.shard_tiles < 1:
            raise ConfigError("shard_tiles must be at least 1")


C = TypeVar("C")


def as_dict(spec: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(spec)


def from_dict(cls: type[C], data: dict[str, Any], source: str | Path | None = None) -> C:
    """Build ``cls`` from a dict, naming unknown keys in a clear error."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)}",
            path=source,
            fix=f"known keys: {', '.join(sorted(names))}",
        )
    return cls(**data)


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
