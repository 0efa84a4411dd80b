"""The heatmap as a pyramidal tiled TIFF overlay: the slide's extent, resolution tags of the raster's
pixel size, colours exact (deflate by default), a JSON description of the scale."""

from __future__ import annotations

import json
from pathlib import Path

from .colormap import colorize, value_range
from .stitch import Heatmap


def write_tiff(
    heatmap: Heatmap,
    path: str | Path,
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    compression: str = "deflate",
) -> Path:
    """Write the coloured heatmap (white where there is no score) as a pyramidal TIFF whose pixels are
    ``heatmap.pixel_mpp`` microns, so it spans the slide; the description records score, scale and
    colormap as JSON."""
    from ..io.tiff_writer import write_pyramidal_tiff

    lo, hi = value_range(heatmap.values, vmin, vmax)
    description = json.dumps(
        {
            "pathweak": "heatmap",
            "slide_id": heatmap.slide_id,
            "score": heatmap.name,
            "cmap": cmap,
            "vmin": lo,
            "vmax": hi,
            "downsample": list(heatmap.downsample),
            "slide_size": list(heatmap.slide_size),
            "mpp": list(heatmap.pixel_mpp),
        }
    )
    rgb = colorize(heatmap.values, cmap, lo, hi)
    return write_pyramidal_tiff(path, rgb, heatmap.pixel_mpp, compression=compression, description=description)
