"""Editing a review export the way a pathologist does in QuPath, written back as QuPath writes it.

QuPath's "Export objects as GeoJSON" (FeatureCollection, measurements included) writes each object as
``{"type": "Feature", "id": UUID, "geometry": {...}, "properties": {"objectType", "name", "color",
"classification", "isLocked" (only when true), "measurements"}}`` in that order, compact, coordinates as
doubles, NaN measurements as the string "NaN" (../shared/data/qupath/QUPATH_GEOJSON_FORMAT.md, from the
serializer QuPathTypeAdapters.PathObjectTypeAdapter). "Set classification" replaces the object's
classification with ``{"name": CLASS, "color": [r, g, b]}``; a drawn annotation is a Polygon annotation.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

ORDER = ("objectType", "name", "color", "classification", "isLocked", "measurements")


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text())["features"]


def reclassify(feature: dict[str, Any], name: str | None, color: tuple[int, int, int] = (200, 0, 0)) -> None:
    """QuPath's Set classification (None: Unclassified, which removes the classification)."""
    props = feature["properties"]
    if name is None:
        props.pop("classification", None)
    else:
        props["classification"] = {"name": name, "color": list(color)}


def annotation(ring: list[tuple[float, float]], name: str | None, color: tuple[int, int, int] = (200, 0, 0)) -> dict[str, Any]:
    """A polygon annotation drawn by hand, with a class (or none)."""
    props: dict[str, Any] = {"objectType": "annotation"}
    if name is not None:
        props["classification"] = {"name": name, "color": list(color)}
    closed = [*ring, ring[0]] if ring[0] != ring[-1] else list(ring)
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": {"type": "Polygon", "coordinates": [closed]},
            "properties": props}


def write(path: Path, features: list[dict[str, Any]], measurements: bool = True) -> Path:
    """The objects as QuPath's exporter writes them (``measurements=False``: "Exclude measurements")."""
    out = []
    for f in features:
        props = {k: f["properties"][k] for k in ORDER if k in f["properties"]}
        if not measurements:
            props.pop("measurements", None)
        geom = dict(f["geometry"])
        geom["coordinates"] = _doubles(geom["coordinates"])
        out.append({"type": "Feature", "id": f.get("id"), "geometry": geom, "properties": props})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"type": "FeatureCollection", "features": out}, separators=(",", ":")))
    return Path(path)


def _doubles(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_doubles(v) for v in value]
    return float(value)


def tile_ring(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
