"""Reading QuPath GeoJSON: FeatureCollections, bare arrays, single Features, bare geometries and the
older 0.2 style (``"id": "PathAnnotationObject"``, ``colorRGB``). Coordinates are level-0 pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_V02_TYPES = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tmaCore",
    "PathRootObject": "root",
}


@dataclass
class QuPathObject:
    """One QuPath object: its geometry (shapely, level-0 pixels) and the properties pathweak uses."""

    geometry: Any
    object_type: str = "annotation"
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    name: str | None = None
    id: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)


def read_qupath_geojson(path: str | Path) -> list[QuPathObject]:
    """All objects in a QuPath GeoJSON file, in file order."""
    from shapely.geometry import shape

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("GeoJSON file not found", path=path, fix="check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"not valid JSON ({exc})", path=path, fix="export the objects from QuPath as GeoJSON"
        ) from None

    if isinstance(data, dict) and data.get("crs") is not None:
        raise ConfigError(
            f"the file has a crs member ({_crs_name(data['crs'])}), so its coordinates are in a map's reference "
            "system, not the slide's level-0 pixels",
            path=path,
            fix="export the objects from QuPath (File > Export objects as GeoJSON), or remove the crs member if the "
            "coordinates already are level-0 pixels (x right, y down from the top-left corner)",
        )
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, list):
        features = data
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif (
        isinstance(data, dict)
        and "coordinates" in data
        or isinstance(data, dict)
        and data.get("type") == "GeometryCollection"
    ):
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        raise ConfigError(
            "not a GeoJSON FeatureCollection, Feature list, Feature or geometry",
            path=path,
            fix="export the objects from QuPath with File > Export objects as GeoJSON",
        )

    objects: list[QuPathObject] = []
    for i, feat in enumerate(_flatten(features)):
        if not isinstance(feat, dict):
            raise ConfigError(f"feature {i} is not a JSON object", path=path)
        if feat.get("geometry") is None:
            if _object_type(feat, feat.get("properties") or {}) == "root":
                continue  # the root of a hierarchy export has no geometry, only children
            raise ConfigError(f"feature {i} has no geometry", path=path)
        try:
            geom = shape(feat["geometry"])
        except Exception as exc:
            raise ConfigError(f"feature {i} has an invalid geometry ({exc})", path=path) from None
        props = feat.get("properties") or {}
        objects.append(
            QuPathObject(
                geometry=geom,
                object_type=_object_type(feat, props),
                classification=_class_name(props.get("classification")),
                color=_class_color(props.get("classification")) or _rgb(props.get("color")),
                name=props.get("name"),
                id=feat.get("id") if feat.get("id") not in _V02_TYPES else None,
                measurements=_measurements(props.get("measurements")),
            )
        )
    return objects


def annotation_geometries(objects: list[QuPathObject], classes: list[str] | None = None) -> list[Any]:
    """The (Multi)Polygon geometries of the annotations (and TMA cores) among ``objects``, keeping only
    the classifications in ``classes`` when given: regions of interest and ground truth."""
    keep = [o for o in objects if o.object_type in ("annotation", "tmaCore")]
    if classes:
        keep = [o for o in keep if o.classification in classes]
    return [o.geometry for o in keep if o.geometry.geom_type in ("Polygon", "MultiPolygon")]


def annotations_on_slide(
    path: str | Path, slide_size: tuple[int, int], classes: list[str] | None = None, what: str = "annotations"
) -> list[Any]:
    """The polygon annotations of a QuPath GeoJSON file (of ``classes``) that regions of interest and
    ground truth use, checked against the slide (``slide_size`` level-0 width and height): none, none with
    an area, or most of their area outside the slide (lon/lat degrees, y-up or negative coordinates,
    another slide's annotations) is one error naming the file, the bounds found and the slide's size."""
    import shapely

    geoms = annotation_geometries(read_qupath_geojson(path), classes)
    wanted = f" of class {', '.join(classes)}" if classes else ""
    if not geoms:
        raise ConfigError(
            f"no polygon annotations{wanted} in the file",
            path=path,
            fix="check the class names (QuPath's classifications) or draw and export annotations in QuPath",
        )
    union = shapely.union_all([shapely.make_valid(g) for g in geoms])
    if union.is_empty or union.area == 0:
        raise ConfigError(
            f"the {what}{wanted} have no area (empty or degenerate polygons)",
            path=path,
            fix="draw them as areas in QuPath and export again",
        )
    w, h = slide_size
    inside = union.intersection(shapely.box(0, 0, w, h)).area
    if inside >= 1 and inside >= 0.5 * union.area:
        return geoms
    x0, y0, x1, y1 = union.bounds
    hint = coordinate_hint(union.bounds, slide_size)
    found = f"their bounds are x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g}{'; ' + hint if hint else ''}"
    if inside < 1:
        how = "do not overlap" if inside == 0 else "cover less than one pixel of"
        problem = f"{how} the slide's level-0 extent of {w} x {h} px ({found})"
    else:
        problem = (
            f"lie mostly outside the slide's level-0 extent of {w} x {h} px ({found}): "
            f"{inside / union.area:.0%} of their area is inside it"
        )
    raise ConfigError(
        f"the {what}{wanted} {problem}",
        path=path,
        fix="export the annotations of this slide from QuPath (File > Export objects as GeoJSON): level-0 pixels, "
        "x right and y down from the top-left corner",
    )


def coordinate_hint(bounds: tuple[float, float, float, float], size: tuple[int, int]) -> str:
    """Why annotations might miss the slide, from their bounds: lon/lat degrees, y-up or another image."""
    x0, y0, x1, y1 = bounds
    if -180 <= x0 and x1 <= 180 and -90 <= y0 and y1 <= 90 and max(size) > 360:
        return "these look like longitude/latitude degrees"
    if y1 <= 0 < x1:
        return "y is negative: y-up coordinates? QuPath counts y down from the top"
    if x1 > size[0] or y1 > size[1]:
        return "annotations of another slide, or of a larger image?"
    return ""


def _crs_name(crs: Any) -> str:
    if isinstance(crs, dict):
        props = crs.get("properties")
        if isinstance(props, dict) and props.get("name"):
            return str(props["name"])
    return json.dumps(crs)[:80]


def _flatten(features: list[Any]) -> list[Any]:
    """Features with the ``childObjects`` of a hierarchy export listed after their parent."""
    out: list[Any] = []
    stack = list(reversed(features))
    while stack:
        feat = stack.pop()
        out.append(feat)
        children = (feat.get("properties") or {}).get("childObjects") if isinstance(feat, dict) else None
        if isinstance(children, list):
            stack.extend(reversed(children))
    return out


def _object_type(feat: dict[str, Any], props: dict[str, Any]) -> str:
    for key in ("objectType", "object_type", "type"):
        value = props.get(key)
        if isinstance(value, str) and value:
            return value
    return _V02_TYPES.get(str(feat.get("id")), "annotation")


def _class_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "names" in value:
            return ": ".join(value["names"])
        return value.get("name")
    return None


def _class_color(value: Any) -> tuple[int, int, int] | None:
    if not isinstance(value, dict):
        return None
    if "color" in value:
        return _rgb(value["color"])
    if "colorRGB" in value:  # QuPath 0.2: signed packed ARGB
        packed = int(value["colorRGB"]) & 0xFFFFFFFF
        return ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)
    return None


def _rgb(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) >= 3:
        return (int(value[0]), int(value[1]), int(value[2]))
    return None


def _measurements(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k): _number(v) for k, v in value.items()}
    if isinstance(value, list):  # old array form [{"name": ..., "value": ...}]
        return {str(m["name"]): _number(m.get("value")) for m in value if isinstance(m, dict) and "name" in m}
    return {}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
