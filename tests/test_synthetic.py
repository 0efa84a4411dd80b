"""The generated sample cohort: deterministic, labelled, with tumour outlines that match the tiles."""

from __future__ import annotations

import csv
import hashlib

import numpy as np

from pathweak.io import open_slide
from pathweak.io.qupath_geojson import read_qupath_geojson
from pathweak.synthetic import make_sample_cohort
from pathweak.tiling import TileStore, tile_slide


def test_same_seed_same_bytes(tmp_path):
    a = make_sample_cohort(tmp_path / "a", n_slides=2)
    b = make_sample_cohort(tmp_path / "b", n_slides=2)
    for x, y in zip(a, b, strict=True):
        assert hashlib.sha256(x.path.read_bytes()).digest() == hashlib.sha256(y.path.read_bytes()).digest()


def test_labels_and_slides(sample_cohort):
    rows = list(csv.DictReader(open(sample_cohort / "labels.csv")))
    assert [r["label"] for r in rows] == ["tumour", "normal", "tumour", "normal"]
    assert {"slide_id", "patient_id", "label", "path"} <= set(rows[0])
    with open_slide(sample_cohort / rows[0]["path"]) as s:
        assert s.mpp == (0.5, 0.5) and s.level_count >= 2 and s.vendor == "generic-tiff"


def test_tumour_outlines_mark_dense_nuclei(sample_cohort, tmp_path):
    """Tiles inside the tumour annotation are darker (more haematoxylin) than tiles outside it."""
    from shapely.geometry import box

    objs = read_qupath_geojson(sample_cohort / "sample_00.tumour.geojson")
    assert objs and all(o.classification == "Tumor" and o.object_type == "annotation" for o in objs)
    r = tile_slide(sample_cohort / "sample_00.tiff", tmp_path, progress=False)
    with TileStore.open(r.store) as store:
        tiles = store.read_tiles(np.arange(len(store)))
        inside = np.array([
            max(o.geometry.intersection(box(x, y, x + 224, y + 224)).area for o in objs) / 224**2 for x, y in store.coords
        ])
    assert (inside > 0.5).sum() >= 2
    brightness = tiles.reshape(len(tiles), -1).mean(1)
    assert brightness[inside > 0.5].mean() < brightness[inside == 0].mean() - 15
