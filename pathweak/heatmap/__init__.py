"""Heatmaps and QuPath exchange: per-tile scores stitched into slide-aligned rasters and exported as
QuPath GeoJSON, pyramidal TIFF overlays, PNG previews and CSV; QuPath annotations read back as
per-tile ground truth; the review loop's export (classified tiles and a review queue) and its corrections
read back for training (docs/review.md). The results store the scores come from is on the store floor
(:mod:`pathweak.store.results`), re-exported here. Every name is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ..store.results import ScoreTable, read_results, read_scores_csv, write_results, write_scores_csv
    from .colormap import COLORMAPS, colorize
    from .corrections import read_corrections
    from .export import FORMATS, ExportOptions, export, write_heatmaps
    from .geojson import FeatureCollectionWriter, write_geojson
    from .png import write_png
    from .regions import Region, annotation_fractions, region_polygons
    from .review import export_review
    from .source import TileScores, load_scores, tile_scores
    from .stitch import Heatmap, stitch
    from .tiff import write_tiff

_EXPORTS = {
    "COLORMAPS": "colormap",
    "colorize": "colormap",
    "read_corrections": "corrections",
    "FORMATS": "export",
    "ExportOptions": "export",
    "export": "export",
    "write_heatmaps": "export",
    "FeatureCollectionWriter": "geojson",
    "write_geojson": "geojson",
    "write_png": "png",
    "Region": "regions",
    "annotation_fractions": "regions",
    "region_polygons": "regions",
    "export_review": "review",
    "TileScores": "source",
    "load_scores": "source",
    "tile_scores": "source",
    "Heatmap": "stitch",
    "stitch": "stitch",
    "write_tiff": "tiff",
    "ScoreTable": "..store.results",
    "read_results": "..store.results",
    "read_scores_csv": "..store.results",
    "write_results": "..store.results",
    "write_scores_csv": "..store.results",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
