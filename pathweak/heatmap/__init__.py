"""Heatmaps and QuPath exchange: per-tile scores stitched into slide-aligned rasters and exported as
QuPath GeoJSON, pyramidal TIFF overlays, PNG previews and CSV; QuPath annotations read back as
per-tile ground truth."""

from ..store.results import ScoreTable, read_results, read_scores_csv, write_results, write_scores_csv
from .colormap import COLORMAPS, colorize
from .export import FORMATS, ExportOptions, export, write_heatmaps
from .geojson import FeatureCollectionWriter, write_geojson
from .png import write_png
from .regions import Region, annotation_fractions, region_polygons
from .source import TileScores, load_scores, tile_scores
from .stitch import Heatmap, stitch
from .tiff import write_tiff

__all__ = [
    "COLORMAPS",
    "FORMATS",
    "ExportOptions",
    "FeatureCollectionWriter",
    "Heatmap",
    "Region",
    "ScoreTable",
    "TileScores",
    "annotation_fractions",
    "colorize",
    "export",
    "load_scores",
    "read_results",
    "read_scores_csv",
    "region_polygons",
    "stitch",
    "tile_scores",
    "write_geojson",
    "write_heatmaps",
    "write_png",
    "write_results",
    "write_scores_csv",
    "write_tiff",
]
