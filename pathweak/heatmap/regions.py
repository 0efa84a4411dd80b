"""Regions both ways between tiles and QuPath annotations: thresholded scores become classified
annotation polygons (export), and annotations become per-tile overlap fractions (ground truth)."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .source import TileScores

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_SPEC = re.compile(
    r"^\s*(?P<score>[^<>=:]+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+.\deE]+|nan|inf)\s*"
    r"(?::\s*(?P<cls>[^:]+?)\s*)?(?::\s*#(?P<color>[0-9a-fA-F]{6})\s*)?$"
)
PALETTE = ((200, 0, 0), (0, 150, 0), (0, 0, 200), (200, 150, 0), (150, 0, 200), (0, 150, 200))


@dataclass(frozen=True)
class Region:
    """Tiles whose ``score`` compares true with ``threshold`` (``op`` one of >=, >, <=, <), exported as
    annotations classified ``name`` with ``color``."""

    score: str
    threshold: float
    name: str
    color: tuple[int, int, int] = PALETTE[0]
    op: str = ">="

    @classmethod
    def parse(cls, text: str, index: int = 0) -> Region:
        """``SCORE>=VALUE[:CLASS[:#RRGGBB]]``, e.g. ``tumor_prob>=0.5:Tumor:#c80000``; the class defaults
        to the score's name and the colour to the ``index``-th of a small palette."""
        m = _SPEC.match(text)
        if m is None:
            raise ConfigError(
                f"cannot read the region {text!r}", fix="write SCORE>=VALUE[:CLASS[:#RRGGBB]], e.g. prob>=0.5:Tumor"
            )
        color = m["color"]
        rgb = tuple(int(color[i : i + 2], 16) for i in (0, 2, 4)) if color else PALETTE[index % len(PALETTE)]
        return cls(m["score"], float(m["value"]), m["cls"] or m["score"], rgb, m["op"])  # type: ignore[arg-type]

    def selects(self, values: np.ndarray) -> np.ndarray:
        """Which tiles are in the region (a NaN score never is)."""
        with np.errstate(invalid="ignore"):
            return _OPS[self.op](values, self.threshold) & np.isfinite(values)


def region_polygons(ts: TileScores, region: Region) -> tuple[list[Any], np.ndarray]:
    """The union of the region's tile boxes as valid shapely Polygons in level-0 pixels (inside the
    slide), and (polygon index, tile index) pairs saying which tiles make each polygon."""
    import shapely

    (values,) = ts.pick([region.score], option="--region").values()
    chosen = np.nonzero(region.selects(values))[0]
    if chosen.size == 0:
        return [], np.zeros((0, 2), np.int64)
    x0, y0, x1, y1 = (b[chosen] for b in ts.boxes())
    union = shapely.simplify(shapely.union_all(shapely.box(x0, y0, x1, y1)), 0)  # drops collinear vertices
    polygons = [p for p in getattr(union, "geoms", [union]) if p.geom_type == "Polygon" and not p.is_empty]
    centres = shapely.points((x0 + x1) / 2, (y0 + y1) / 2)
    centre_in, polygon = shapely.STRtree(polygons).query(centres, predicate="within")
    return polygons, np.column_stack([polygon, chosen[centre_in]])


def annotation_fractions(
    ts: TileScores,
    annotations: str | Path | list[Any],
    classes: list[str] | None = None,
    px_per_tile: int = 16,
) -> np.ndarray:
    """For each tile, the fraction of its area inside the annotations (of ``classes``, when given) of a
    QuPath GeoJSON file or a list of level-0 shapely geometries: ground truth for evaluation.

    The annotations are rasterised at ``px_per_tile`` pixels per tile side, so edges are exact to about
    1 / ``px_per_tile`` of a tile."""
    from ..io.qupath_geojson import annotations_on_slide
    from ..tissue.mask import TissueMask, rasterize_polygons

    if isinstance(annotations, (str, Path)):
        geoms = annotations_on_slide(annotations, ts.slide_size, classes)
    else:
        geoms = list(annotations)
    w0, h0 = ts.slide_size
    ds = max(min(ts.extent) / px_per_tile, max(w0, h0) / 16384, 1.0)
    shape = (int(np.ceil(h0 / ds)), int(np.ceil(w0 / ds)))
    mask = TissueMask(rasterize_polygons(geoms, shape, (ds, ds)), (ds, ds), method="annotations")
    return mask.fraction_in_boxes(*ts.boxes()).astype(np.float32)
