"""QuPath GeoJSON both ways: tiles and thresholded regions exported, read back with the QuPath reader
(geometry, classification, measurements intact, polygons valid and inside the slide), annotations as
per-tile ground truth, and the shapes QuPath itself writes."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from conftest import SHARED, SVS, need_shared

from pathweak.errors import ConfigError
from pathweak.heatmap import (
    FeatureCollectionWriter,
    Region,
    annotation_fractions,
    region_polygons,
    tile_scores,
    write_geojson,
)
from pathweak.heatmap.geojson import number_strings, uuid4_strings
from pathweak.io.qupath_geojson import read_qupath_geojson
from pathweak.tiling import TileStore, tile_slide


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    need_shared(SVS)
    store = TileStore.open(tile_slide(SVS, tmp_path_factory.mktemp("tiles"), progress=False).store)
    n = len(store)
    rng = np.random.default_rng(3)
    scores = {
        "attention": rng.random(n).astype(np.float32),
        "tumor prob": rng.random(n).astype(np.float32),
        "pseudo-label": rng.integers(0, 3, n).astype(np.float32),
        "logit": rng.normal(0, 1e4, n).astype(np.float32),
    }
    scores["attention"][[0, 5]] = np.nan
    return tile_scores(store, scores)


def test_round_trip_keeps_geometry_classification_and_measurements(scored, tmp_path):
    from shapely.geometry import box

    regions = [Region.parse("tumor prob>=0.6:Tumor:#c80000"), Region.parse("pseudo-label<1:Stroma", 1)]
    path = write_geojson(scored, tmp_path / "s.geojson", regions=regions, seed=7)
    json.loads(path.read_text())  # valid JSON as a whole
    objs = read_qupath_geojson(path)
    detections = [o for o in objs if o.object_type == "detection"]
    annotations = [o for o in objs if o.object_type == "annotation"]
    n = len(scored.coords)
    assert len(detections) == n

    slide = box(0, 0, *scored.slide_size)
    x0, y0, x1, y1 = scored.boxes()
    for i, o in enumerate(detections):  # written in the store's order
        ring = [(x0[i], y0[i]), (x1[i], y0[i]), (x1[i], y1[i]), (x0[i], y1[i]), (x0[i], y0[i])]
        assert o.geometry.geom_type == "Polygon" and list(o.geometry.exterior.coords) == ring  # closed
        assert o.geometry.is_valid and slide.covers(o.geometry)
        assert list(o.measurements) == list(scored.scores)
        for name, values in scored.scores.items():
            got = np.float32(o.measurements[name])
            assert (np.isnan(got) and np.isnan(values[i])) or got == values[i], name
    ids = [o.id for o in objs]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i).version == 4 for i in ids)

    for region in regions:
        mine = [o for o in annotations if o.classification == region.name]
        polygons, owners = region_polygons(scored, region)
        assert len(mine) == len(polygons) > 0
        assert all(o.color == region.color for o in mine)
        for o, poly in zip(mine, polygons, strict=True):
            assert o.geometry.is_valid and slide.covers(o.geometry) and o.geometry.equals(poly)
        assert sum(o.measurements["Tiles"] for o in mine) == region.selects(scored.scores[region.score]).sum()
    tumour = [o for o in annotations if o.classification == "Tumor"]
    assert tumour[0].color == (200, 0, 0)

    # the same UUID seed gives the same file
    again = write_geojson(scored, tmp_path / "again.geojson", regions=regions, seed=7)
    assert again.read_bytes() == path.read_bytes()


def test_exported_regions_come_back_as_ground_truth(scored, tmp_path):
    region = Region.parse("tumor prob>=0.5:Tumor")
    path = write_geojson(scored, tmp_path / "r.geojson", scores=["tumor prob"], regions=[region])
    fractions = annotation_fractions(scored, path, ["Tumor"])
    inside = region.selects(scored.scores["tumor prob"])
    assert fractions.shape == (len(scored.coords),) and fractions.dtype == np.float32
    assert (fractions[inside] > 0.99).all() and (fractions[~inside] < 0.01).all()
    with pytest.raises(ConfigError, match="no polygon annotations of class Necrosis"):
        annotation_fractions(scored, path, ["Necrosis"])


def test_partial_overlap_fraction(scored):
    from shapely.geometry import box

    x, y = (int(v) for v in scored.coords[10])
    half = box(x, y, x + 112, y + 224)  # the left half of tile 10
    fractions = annotation_fractions(scored, [half])
    assert fractions[10] == pytest.approx(0.5, abs=1 / 16)
    assert fractions[np.arange(len(fractions)) != 10].max() < 1 / 16


def test_real_qupath_annotations_as_ground_truth(scored, tmp_path):
    from shapely.affinity import scale
    from shapely.geometry import mapping, shape

    need_shared(SHARED / "qupath")
    # QuPath's own test polygon (tissue contours in level-0 pixels of a 10,000 px image) does not belong to
    # this 2220 x 2967 px slide: refused (docs/input_checks.md); scaled onto the slide, it is ground truth
    polygon = SHARED / "qupath" / "qupath_test_polygon.geojson"
    with pytest.raises(ConfigError, match="lie mostly outside the slide's level-0 extent of 2220 x 2967 px"):
        annotation_fractions(scored, polygon)
    scaled = scale(shape(json.loads(polygon.read_text())), 0.22, 0.29, origin=(0, 0))
    on_slide = tmp_path / "scaled.geojson"
    on_slide.write_text(json.dumps(mapping(scaled)))
    fractions = annotation_fractions(scored, on_slide)
    assert fractions.shape == (len(scored.coords),)
    assert ((fractions >= 0) & (fractions <= 1)).all() and fractions.max() > 0.9


def test_hierarchy_and_old_style_detections_parse(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    hierarchy = {"type": "Feature", "id": str(uuid.uuid4()), "geometry": None, "properties": {
        "objectType": "root", "childObjects": [
            {"type": "Feature", "id": str(uuid.uuid4()), "geometry": square, "properties": {
                "objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "childObjects": [{"type": "Feature", "id": "PathDetectionObject", "geometry": square,
                                  "properties": {"measurements": {"p": 0.5}}}]}}]}}
    p = tmp_path / "h.geojson"
    p.write_text(json.dumps(hierarchy))
    ann, det = read_qupath_geojson(p)
    assert ann.object_type == "annotation" and ann.classification == "Tumor"
    assert det.object_type == "detection" and det.measurements == {"p": 0.5} and det.id is None


def test_streaming_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.geojson"
    with pytest.raises(RuntimeError):
        with FeatureCollectionWriter(target) as out:
            out.write(['{"type":"Feature"}'])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with FeatureCollectionWriter(target) as out:
        pass
    assert json.loads(target.read_text()) == {"type": "FeatureCollection", "features": []}


def test_number_and_uuid_formatting():
    values = np.array([0.1, 1.0, -2.0, np.nan, np.inf, 1e-7, 3.4e38, 123456.78], np.float32)
    text = number_strings(values, float32=True)
    assert text[1] == "1" and text[2] == "-2" and text[3] == '"NaN"' and text[4] == '"Infinity"'
    back = np.array([float(json.loads(t)) for t in text], np.float32)
    assert np.array_equal(back, values, equal_nan=True)
    assert number_strings(np.array([896.0, 1344.5, 896.0])) == ["896", "1344.5", "896"]
    ids = uuid4_strings(1000)
    assert len(set(ids)) == 1000 and all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


def test_region_parsing():
    r = Region.parse("tumor prob >= 0.5 : Tumor : #00ff80")
    assert (r.score, r.op, r.threshold, r.name, r.color) == ("tumor prob", ">=", 0.5, "Tumor", (0, 255, 128))
    r = Region.parse("attention<0.1", index=1)
    assert (r.score, r.op, r.name) == ("attention", "<", "attention") and r.color == (0, 150, 0)
    assert list(r.selects(np.array([0.05, 0.2, np.nan], np.float32))) == [True, False, False]
    with pytest.raises(ConfigError, match="cannot read the region"):
        Region.parse("attention=0.5")
