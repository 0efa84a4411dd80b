"""3D medical volumes: reading (NIfTI, NRRD, MetaImage, DICOM), foreground masks, tiling into TileStores
and writing per-patch scores back as NIfTI heatmaps. See docs/volumes.md.

Convention: arrays and voxel coordinates are (z, y, x) on a grid whose voxel axes are reoriented to
RAS; affines map a voxel index (x, y, z, 1) to RAS millimetres of the voxel centre.
"""

from .detect import volume_format, volume_id
from .export import patch_boxes, results_to_nifti, score_volume, scores_to_nifti
from .foreground import FOREGROUND_METHODS, foreground_mask
from .geometry import Grid
from .tiler import PreparedVolume, check_label, prepare_volume, tile_volume
from .volume import Volume, open_volume

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
    "score_volume",
    "results_to_nifti",
    "scores_to_nifti",
    "tile_volume",
    "volume_format",
    "volume_id",
]
