"""Tile grids, the tiler and the TileStore format.

``tile_slide`` and ``tile_slides`` are the entry point of :mod:`pathweak.tilers` (which sends 3D
volumes to the volume tiler), re-exported here (lazily: the entry point imports this package's rooms, never the reverse at import
time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..io.inputs import expand_slide_paths
from ..store.tile_result import TileResult
from ..store.tiles import FORMAT_VERSION, TileStore
from .grid import LevelChoice, TileGrid, choose_level, tile_grid
from .plan import TileJob

if TYPE_CHECKING:
    from ..tilers import tile_slide, tile_slides

__all__ = [
    "FORMAT_VERSION",
    "LevelChoice",
    "TileGrid",
    "TileJob",
    "TileResult",
    "TileStore",
    "choose_level",
    "expand_slide_paths",
    "tile_grid",
    "tile_slide",
    "tile_slides",
]


def __getattr__(name: str) -> Any:
    if name in ("tile_slide", "tile_slides"):
        from .. import tilers

        return getattr(tilers, name)
    raise AttributeError(f"module 'pathweak.tiling' has no attribute {name!r}")
