"""3D medical volumes: reading (NIfTI, NRRD, MetaImage, DICOM), foreground masks, tiling into TileStores
and writing per-patch scores back as NIfTI heatmaps. See docs/volumes.md.

Convention: arrays and voxel coordinates are (z, y, x) on a grid whose voxel axes are reoriented to
RAS; affines map a voxel index (x, y, z, 1) to RAS millimetres of the voxel centre.

The names below are imported on first use, so asking whether a path is a volume
(:func:`pathweak.io.detect.volume_format`, re-exported here) loads neither the tiler nor Zarr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from ..io.detect import volume_format, volume_id  # what `pathweak info` asks of every input (reads no volume)

if TYPE_CHECKING:
    from .export import patch_boxes, results_to_nifti, score_volume, scores_to_nifti
    from .foreground import FOREGROUND_METHODS, foreground_mask
    from .geometry import Grid
    from .tiler import PreparedVolume, check_label, prepare_volume, tile_volume
    from .volume import Volume, open_volume

_EXPORTS = {
    "patch_boxes": "export",
    "results_to_nifti": "export",
    "score_volume": "export",
    "scores_to_nifti": "export",
    "FOREGROUND_METHODS": "foreground",
    "foreground_mask": "foreground",
    "Grid": "geometry",
    "PreparedVolume": "tiler",
    "check_label": "tiler",
    "prepare_volume": "tiler",
    "tile_volume": "tiler",
    "Volume": "volume",
    "open_volume": "volume",
}

__all__ = [
    "FOREGROUND_METHODS",
    "Grid",
    "PreparedVolume",
    "Volume",
    "check_label",
    "foreground_mask",
    "open_volume",
    "patch_boxes",
    "prepare_volume",
    "results_to_nifti",
    "score_volume",
    "scores_to_nifti",
    "tile_volume",
    "volume_format",
    "volume_id",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
