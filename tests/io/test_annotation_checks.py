"""Annotations that cannot be meant for the slide (docs/input_checks.md): lon/lat degrees, y-up coordinates, a
``crs`` member, another image's annotations, a class with no area. `pathweak tile --roi` and `pathweak
ground-truth` refuse them with one line naming the file, the bounds found and the slide's size, and write
nothing; annotations on the slide but on no tile are a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SVS, assert_clean_failure, need_shared, run_cli

from pathweak.io import open_slide

CRS84 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}


def _moved(src: Path, dst: Path, fn, crs: dict | None = None) -> Path:
    """``src``'s features with every coordinate pair mapped by ``fn`` (and a ``crs`` member)."""
    data = json.loads(src.read_text())

    def walk(c):
        return list(fn(*c)) if isinstance(c[0], (int, float)) else [walk(x) for x in c]

    for feat in data["features"]:
        feat["geometry"]["coordinates"] = walk(feat["geometry"]["coordinates"])
    if crs is not None:
        data["crs"] = crs
    dst.write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def slide(sample_cohort, tmp_path_factory):
    """A sample slide, its tumour annotations (level-0 pixels, as QuPath writes them), its size and its tiles."""
    from pathweak.tiling import tile_slide

    path = sample_cohort / "sample_00.tiff"
    with open_slide(path) as s:
        size = s.dimensions
    store = tile_slide(path, tmp_path_factory.mktemp("gt"), progress=False).store
    return {"path": path, "annotations": sample_cohort / "sample_00.tumour.geojson", "size": size, "store": store}


FORMS = {  # as observed: each tiled 0 tiles with exit 0, and ground-truth wrote an all-zero CSV
    "lonlat": (lambda x, y: (8.5 + x * 1e-5, 47.3 + y * 1e-5), None, "these look like longitude/latitude degrees"),
    "y-up": (lambda x, y: (x, -y), None, "y is negative: y-up coordinates?"),
    "crs84": (lambda x, y: (8.5 + x * 1e-5, 47.3 + y * 1e-5), CRS84, "the file has a crs member (urn:ogc:def:crs:OGC:1.3:CRS84)"),
}


@pytest.mark.parametrize("form", FORMS)
def test_annotations_off_the_slide_are_refused_by_tile_and_ground_truth(slide, tmp_path, form):
    fn, crs, hint = FORMS[form]
    roi = _moved(slide["annotations"], tmp_path / f"{form}.geojson", fn, crs)
    out = tmp_path / "tiles"
    proc = run_cli("tile", str(slide["path"]), "--roi", str(roi), "-o", str(out), "--no-progress")
    w, h = slide["size"]
    size = [] if crs else [f"level-0 extent of {w} x {h} px", "their bounds are x "]
    assert proc.returncode == 2
    assert_clean_failure(proc, roi, out, hint, *size)
    csv = tmp_path / "gt.csv"
    proc = run_cli("ground-truth", slide["store"], str(roi), "-o", str(csv))
    assert proc.returncode == 2
    assert_clean_failure(proc, roi, csv, hint, *size)


def test_the_same_annotations_in_level0_pixels_are_used(slide, tmp_path):
    csv = tmp_path / "gt.csv"
    proc = run_cli("ground-truth", slide["store"], str(slide["annotations"]), "-o", str(csv))
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    fractions = [float(line.split(",")[2]) for line in csv.read_text().splitlines()[1:]]
    assert max(fractions) > 0.5


def test_real_qupath_polygon_of_another_image_is_refused_on_the_real_svs(tmp_path):
    """QuPath's own test polygon (drawn on a 10,000 px image) against the real 2220 x 2967 px SVS."""
    need_shared(SVS)
    polygon = SVS.parents[1] / "qupath" / "qupath_test_polygon.geojson"
    need_shared(polygon)
    out = tmp_path / "out"
    proc = run_cli("tile", str(SVS), "--roi", str(polygon), "-o", str(out), "--no-progress")
    assert_clean_failure(proc, polygon, out, "lie mostly outside the slide's level-0 extent of 2220 x 2967 px",
                         "annotations of another slide, or of a larger image?")


def test_a_class_whose_geometry_is_empty_is_refused(slide, tmp_path):
    data = json.loads(slide["annotations"].read_text())
    for feat in data["features"]:
        feat["geometry"] = {"type": "Polygon", "coordinates": []}  # the class exists, its outline does not
    roi = tmp_path / "empty.geojson"
    roi.write_text(json.dumps(data))
    out = tmp_path / "out"
    proc = run_cli("tile", str(slide["path"]), "--roi", str(roi), "--roi-class", "Tumor", "-o", str(out),
                   "--no-progress")
    assert_clean_failure(proc, roi, out, "annotations of class Tumor have no area")


def test_ground_truth_warns_when_the_annotations_miss_every_tile(slide, tmp_path):
    corner = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5, 5], [60, 5], [60, 60], [5, 60], [5, 5]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}}]}
    path = tmp_path / "corner.geojson"
    path.write_text(json.dumps(corner))
    proc = run_cli("ground-truth", slide["store"], str(path), "-o", str(tmp_path / "gt.csv"), "--class", "Tumor")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {path}: no tile of {slide['store']} overlaps the annotations (Tumor)" in proc.stderr
