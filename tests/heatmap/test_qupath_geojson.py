"""Reading QuPath GeoJSON in its several shapes (the real samples, plus the documented variants)."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED, need_shared

from pathweak.errors import ConfigError
from pathweak.io.qupath_geojson import read_qupath_geojson

QUPATH = SHARED / "qupath"


def test_real_detection_excerpt():
    need_shared(QUPATH)
    objs = read_qupath_geojson(QUPATH / "qupath_objects_excerpt.geojson")
    assert len(objs) == 2
    for o in objs:
        assert o.object_type == "detection"
        assert o.id and len(o.id) == 36  # a UUID
        assert o.measurements and all(isinstance(v, float) for v in o.measurements.values())


def test_bare_geometry_reads_as_annotation():
    need_shared(QUPATH)
    (obj,) = read_qupath_geojson(QUPATH / "qupath_test_polygon.geojson")
    assert obj.object_type == "annotation" and obj.geometry.geom_type == "MultiPolygon"
    assert len(obj.geometry.geoms) == 3


def test_old_style_array_single_feature_and_string_class(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    old = [{"type": "Feature", "id": "PathAnnotationObject", "geometry": square,
            "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016},
                           "measurements": [{"name": "Area", "value": 100}]}}]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(old))
    (o,) = read_qupath_geojson(p)
    assert o.object_type == "annotation" and o.classification == "Tumor"
    assert o.color == (200, 0, 0) and o.measurements == {"Area": 100.0} and o.id is None

    single = {"type": "Feature", "id": "x", "geometry": square,
              "properties": {"object_type": "tile", "classification": "Stroma", "measurements": {"p": "NaN"}}}
    p.write_text(json.dumps(single))
    (o,) = read_qupath_geojson(p)
    assert o.object_type == "tile" and o.classification == "Stroma"
    assert o.measurements["p"] != o.measurements["p"]  # NaN

    derived = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": square, "properties": {
        "objectType": "cell", "classification": {"names": ["Tumor", "Positive"], "color": [1, 2, 3]}}}]}
    p.write_text(json.dumps(derived))
    (o,) = read_qupath_geojson(p)
    assert o.classification == "Tumor: Positive" and o.color == (1, 2, 3)


def test_bad_files_are_clear_errors(tmp_path):
    p = tmp_path / "bad.geojson"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_qupath_geojson(p)
    p.write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(ConfigError, match="not a GeoJSON"):
        read_qupath_geojson(p)
    with pytest.raises(ConfigError, match="not found"):
        read_qupath_geojson(tmp_path / "missing.geojson")
