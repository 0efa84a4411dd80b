"""The slide tiler: tile grids, the tiler's steps, and ``tile_slide`` / ``tile_slides``, the tiling entry
point over slides and 3D volumes (:mod:`.run`, which sends volumes to :mod:`pathweak.volumes.tiler`).
The TileStore format itself is on the store floor (:mod:`pathweak.store.tiles`), re-exported here.

Every name is imported on first use (:mod:`pathweak._lazy`): importing the package imports none of its
rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ..config import TileOptions
    from ..io.inputs import expand_slide_paths
    from ..store.tile_result import TileResult
    from ..store.tiles import FORMAT_VERSION, TileStore
    from .grid import LevelChoice, TileGrid, choose_level, tile_grid
    from .plan import TileJob
    from .run import tile_slide, tile_slides

_EXPORTS = {
    "LevelChoice": "grid",
    "TileGrid": "grid",
    "choose_level": "grid",
    "tile_grid": "grid",
    "TileJob": "plan",
    "tile_slide": "run",
    "tile_slides": "run",
    # on lower floors, re-exported for the tiling stage's users
    "TileOptions": "..config",
    "expand_slide_paths": "..io.inputs",
    "TileResult": "..store.tile_result",
    "FORMAT_VERSION": "..store.tiles",
    "TileStore": "..store.tiles",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
