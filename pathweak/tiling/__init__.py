"""Tile grids, the tiler and the TileStore format."""

from .grid import LevelChoice, TileGrid, choose_level, tile_grid
from .store import FORMAT_VERSION, TileStore
from .tiler import TileJob, TileResult, expand_slide_paths, tile_slide, tile_slides

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
