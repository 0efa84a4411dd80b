"""pathweak: weakly supervised computational pathology, from slides to scores, masks and heatmaps.

The public API is re-exported here and imported lazily, so ``import pathweak`` stays fast and pulls in
no model libraries (torch, timm, lightning, monai) until a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _moved

__version__ = "0.1.0"
_moved.install()  # modules that moved keep their old import paths for one release (pathweak._moved)

_EXPORTS = {
    "open_slide": "pathweak.io",
    "Slide": "pathweak.io",
    "segment_tissue": "pathweak.tissue",
    "detect_tissue": "pathweak.tissue",
    "TissueMask": "pathweak.tissue",
    "estimate_mpp": "pathweak.resolution",
    "MppEstimate": "pathweak.resolution",
    "tile_grid": "pathweak.tiling",
    "choose_level": "pathweak.tiling",
    "tile_slide": "pathweak.tiling",
    "tile_slides": "pathweak.tiling",
    "TileStore": "pathweak.tiling",
    "TileSpec": "pathweak.config",
    "TissueSpec": "pathweak.config",
    "StoreSpec": "pathweak.config",
    "VolumeSpec": "pathweak.config",
    "open_volume": "pathweak.volumes",
    "Volume": "pathweak.volumes",
    "tile_volume": "pathweak.volumes",
    "scores_to_nifti": "pathweak.volumes",
    "PathweakError": "pathweak.errors",
    "read_qupath_geojson": "pathweak.io.qupath_geojson",
    "load_scores": "pathweak.heatmap",
    "tile_scores": "pathweak.heatmap",
    "write_results": "pathweak.heatmap",
    "read_results": "pathweak.heatmap",
    "annotation_fractions": "pathweak.heatmap",
    "make_sample_cohort": "pathweak.synthetic",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pathweak' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
