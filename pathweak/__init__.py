"""pathweak: weakly supervised computational pathology, from slides to scores, masks and heatmaps.

The whole pipeline from one namespace, ``import pathweak as pw``: slides and tissue (``pw.open_slide``,
``pw.segment_tissue``), tiling (``pw.tile_slides`` into ``pw.TileStore``), pretraining (``pw.pretrain``),
features (``pw.extract_features`` into ``pw.FeatureStore``), heads (``pw.train_cohort``,
``pw.predict_slides``), heatmaps (``pw.write_heatmaps``), reports (``pw.write_report``) and cohort runs
(``pw.run_cohort``). Every name is imported on first use (:mod:`pathweak._lazy`), so ``import pathweak``
stays fast and pulls in no model library (torch, timm, lightning, monai) until a function that needs one
is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _moved
from ._lazy import lazy_getattr
from ._version import __version__

_moved.install()  # modules that moved keep their old import paths for one release (pathweak._moved)

if TYPE_CHECKING:
    from .cohort import CohortSpec, run_cohort
    from .config import StoreSpec, TileOptions, TileSpec, TissueSpec, VolumeSpec
    from .encoders import create_encoder
    from .errors import PathweakError
    from .features import export_h5, extract_features, load_feature_bank
    from .heads import create_head
    from .heatmap import annotation_fractions, export_review, load_scores, read_corrections, tile_scores, write_heatmaps
    from .io import Slide, open_slide
    from .io.qupath_geojson import read_qupath_geojson
    from .report import write_report
    from .resolution import MppEstimate, estimate_mpp
    from .ssl import SSLConfig, distill, pretrain
    from .store.features import FeatureStore
    from .store.results import read_results, write_results
    from .store.tiles import TileStore
    from .synthetic import make_sample_cohort
    from .tiling import choose_level, tile_grid, tile_slide, tile_slides
    from .tissue import TissueMask, detect_tissue, segment_tissue
    from .train import TrainConfig, load_model, predict_slides, read_labels, train_cohort
    from .volumes import Volume, open_volume, scores_to_nifti, tile_volume

_EXPORTS = {
    "open_slide": "io",
    "Slide": "io",
    "segment_tissue": "tissue",
    "detect_tissue": "tissue",
    "TissueMask": "tissue",
    "estimate_mpp": "resolution",
    "MppEstimate": "resolution",
    "read_qupath_geojson": "io.qupath_geojson",
    "TileSpec": "config",
    "TileOptions": "config",
    "TissueSpec": "config",
    "StoreSpec": "config",
    "VolumeSpec": "config",
    "tile_grid": "tiling",
    "choose_level": "tiling",
    "tile_slide": "tiling",
    "tile_slides": "tiling",
    "TileStore": "store.tiles",
    "open_volume": "volumes",
    "Volume": "volumes",
    "tile_volume": "volumes",
    "scores_to_nifti": "volumes",
    "create_encoder": "encoders",
    "SSLConfig": "ssl",
    "pretrain": "ssl",
    "distill": "ssl",
    "extract_features": "features",
    "FeatureStore": "store.features",
    "load_feature_bank": "features",
    "export_h5": "features",
    "create_head": "heads",
    "TrainConfig": "train",
    "read_labels": "train",
    "train_cohort": "train",
    "predict_slides": "train",
    "load_model": "train",
    "read_results": "store.results",
    "write_results": "store.results",
    "load_scores": "heatmap",
    "tile_scores": "heatmap",
    "write_heatmaps": "heatmap",
    "annotation_fractions": "heatmap",
    "export_review": "heatmap",
    "read_corrections": "heatmap",
    "write_report": "report",
    "CohortSpec": "cohort",
    "run_cohort": "cohort",
    "make_sample_cohort": "synthetic",
    "PathweakError": "errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
