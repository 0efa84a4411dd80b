"""The volume side of `pathweak info` and `pathweak tile`: a volume's metadata, and the VolumeSpec built
from the command-line options and a config file's ``volume:`` section (see docs/volumes.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathweak.config import VolumeSpec, from_dict, merge_options
from pathweak.errors import ConfigError

# option name -> VolumeSpec field; the options shared with slides only apply to volumes when given
_FIELDS = {
    "mode": "mode",
    "spacing": "spacing_mm",
    "patch": "patch_px",
    "patch_depth": "patch_depth",
    "overlap": "overlap_px",
    "min_tissue": "min_foreground",
    "planes": "planes",
    "slice_step": "slice_step",
    "normalize": "normalize",
    "window": "window",
    "percentiles": "percentiles",
    "foreground": "foreground",
}
_SHARED_WITH_SLIDES = {"patch", "overlap", "min_tissue"}


def volume_info(path: Path) -> dict[str, Any] | None:
    """`pathweak info` of a volume, or None when ``path`` is not one."""
    from pathweak.io.detect import volume_format

    if volume_format(path) is None:
        return None
    from pathweak.volumes import open_volume

    return open_volume(path).info()


def volume_spec_from_options(
    section: dict[str, Any], explicit: set[str], config: Path | None, **options: Any
) -> VolumeSpec:
    """The VolumeSpec: an option given on the command line wins over the ``volume:`` section, which wins
    over the option's default (``--patch``, ``--overlap``, ``--min-tissue`` keep VolumeSpec's defaults
    unless given, as their defaults are the slides')."""
    parsers = {
        "spacing": _spacing,
        "planes": lambda t: tuple(t.split(",")),
        "window": lambda t: _pair(t, "--window"),
        "percentiles": lambda t: _pair(t, "--percentiles"),
    }
    parsed = {
        name: parsers[name](value) if name in parsers and value is not None else value
        for name, value in options.items()
    }
    given = {_FIELDS[n]: v for n, v in parsed.items() if n in explicit}
    fallback = {_FIELDS[n]: v for n, v in parsed.items() if n not in _SHARED_WITH_SLIDES}
    return from_dict(VolumeSpec, merge_options(section, given, fallback), config)


def _pair(text: str, option: str) -> tuple[float, float]:
    """``"LO,HI"`` as two floats; anything else is a clear error."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} takes two numbers LO,HI, got {text!r}", fix=f"pass e.g. {option} 0.5,99.5"
        ) from None
    return (lo, hi)


def _spacing(text: str) -> tuple[float, float, float] | None:
    """``--spacing``: ``native``, one number (isotropic) or ``z,y,x`` in mm."""
    if text.strip().lower() == "native":
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3):
        raise ConfigError(
            f"--spacing takes one number, three (z,y,x) or 'native', got {text!r}", fix="pass e.g. --spacing 1"
        )
    return (values[0],) * 3 if len(values) == 1 else (values[0], values[1], values[2])
