"""The header every pathweak store carries, and how it is read from a store's group attributes.

The header is a handful of top-level attributes of the store's Zarr group (``zarr.json``)::

    kind             "tiles" | "features" | "results"
    pathweak_format  format version of that kind (1)
    complete         true once the store is finished (set last, before it is swapped into place)
    cache_key        hash of everything the store was made from (null for results)
    source           "slide" | "volume" | "images": what the rows come from
    axes             "xy" | "zyx": the order of the columns of ``coords``
    rows             "tile" | "token" | "slide": one row per tile/patch, per token inside a tile, or one row
                     for the whole slide (a slide embedding, ``pathweak embed-slides``)
    created          creation time, ISO 8601 in UTC
    integrity        "crc32c": every chunk carries a CRC32C and every chunk file is present (absent in
                     stores written before the store layer; they are read without those checks)

Stores written before the header existed lack ``source``, ``axes``, ``rows`` and ``integrity``:
:func:`read_header` derives them from the attributes those stores have (see docs/tilestore_format.md).
Consumers dispatch on :class:`StoreHeader`, never on other attributes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

KINDS = ("tiles", "features", "results")
ROWS = ("tile", "token", "slide")
SOURCES = ("slide", "volume", "images")
INTEGRITY = "crc32c"


@dataclass(frozen=True)
class StoreHeader:
    """What a store is (read from its attributes; ``derived`` when the store predates the header)."""

    kind: str
    format: int
    complete: bool
    cache_key: str | None
    source: str
    axes: str
    rows: str
    created: str | None
    integrity: str | None
    derived: bool = False

    @property
    def checked(self) -> bool:
        """True when every chunk carries a checksum and every chunk file must be present."""
        return self.integrity == INTEGRITY

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc_now() -> str:
    """The current time, ISO 8601 in UTC (the ``created`` of every store)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def header_attrs(
    kind: str, version: int, *, source: str, axes: str, rows: str = "tile", cache_key: str | None = None
) -> dict[str, Any]:
    """The header attributes a writer puts on a new store (``complete`` is false until it is finished)."""
    if kind not in KINDS or source not in SOURCES or axes not in ("xy", "zyx") or rows not in ROWS:
        raise ValueError(f"bad store header: kind={kind} source={source} axes={axes} rows={rows}")
    return {
        "pathweak_format": version,
        "kind": kind,
        "complete": False,
        "cache_key": cache_key,
        "source": source,
        "axes": axes,
        "rows": rows,
        "created": utc_now(),
        "integrity": INTEGRITY,
    }


def source_of(attrs: dict[str, Any]) -> str:
    """The source kind a store's attributes say (the header's, else derived as older stores show it)."""
    if attrs.get("source") in SOURCES:
        return str(attrs["source"])
    if "volume" in attrs or attrs.get("axes") == "zyx":
        return "volume"
    if (attrs.get("slide") or {}).get("source") == "images" or "images" in attrs:
        return "images"
    tile_store = attrs.get("tile_store")
    if isinstance(tile_store, dict) and tile_store.get("source") in SOURCES:
        return str(tile_store["source"])
    return "slide"


def _as_utc(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return text
    if when.tzinfo is None:
        when = when.astimezone()
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def read_header(attrs: dict[str, Any], coord_columns: int | None = None) -> StoreHeader:
    """The header of a store from its group attributes; fields older stores lack are derived
    (``coord_columns``, the width of ``coords``, tells results stores of volumes from slides')."""
    derived = not all(k in attrs for k in ("source", "axes", "rows"))
    source = source_of(attrs)
    if attrs.get("axes") in ("xy", "zyx"):
        axes = str(attrs["axes"])
    else:
        axes = "zyx" if source == "volume" or coord_columns == 3 else "xy"
        if axes == "zyx":
            source = "volume"
    rows = str(attrs["rows"]) if attrs.get("rows") in ROWS else ("token" if "tokens" in attrs else "tile")
    fmt = attrs.get("pathweak_format", 1)
    return StoreHeader(
        kind=str(attrs.get("kind", "")),
        format=int(fmt) if isinstance(fmt, (int, float)) else -1,
        complete=bool(attrs.get("complete")),
        cache_key=attrs.get("cache_key"),
        source=source,
        axes=axes,
        rows=rows,
        created=_as_utc(attrs.get("created")),
        integrity=attrs.get("integrity"),
        derived=derived,
    )
