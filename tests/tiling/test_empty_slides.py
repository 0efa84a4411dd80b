"""A slide that yields no tiles, through every stage (docs/input_checks.md): `pathweak tile` warns and names
the likely cause, extract warns that the FeatureStore is empty, training leaves the slide out with a warning
in run.json (an error when no labelled slide is left), and prediction gives it no score instead of the head's
bias. As observed before: `tiled`, `warning: null`, exit 0, then an empty store trained on without a word."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
from conftest import run_cli

from pathweak.encoders import create_encoder
from pathweak.errors import LabelsError
from pathweak.features import extract_features
from pathweak.train import TrainConfig, train_cohort

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORNER = {"type": "FeatureCollection", "features": [{  # on the slide, in its background margin: no patch reaches it
    "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5, 5], [60, 5], [60, 60], [5, 60], [5, 5]]]},
    "properties": {"objectType": "annotation"}}]}


def _encoder():
    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=64)  # mil_cohort's


@pytest.fixture(scope="module")
def empty(mil_cohort, tmp_path_factory):
    """train_000 and train_001 of the real-tile cohort tiled with an ROI in their background: the CLI run, and
    their (empty) FeatureStores extracted with the cohort's encoder."""
    root = tmp_path_factory.mktemp("empty")
    roi = root / "corner.geojson"
    roi.write_text(json.dumps(CORNER))
    slides = [str(mil_cohort["root"] / "slides" / f"train_00{i}.tiff") for i in (0, 1)]
    proc = run_cli("tile", *slides, "--roi", str(roi), "-o", str(root), "--no-progress", "--json")
    done = extract_features(sorted((root / "tiles").glob("*.zarr")), _encoder(), root, num_workers=0, progress=False)
    return {"root": root, "roi": roi, "tile": proc, "extract": done}


def test_tile_warns_with_the_likely_cause(empty):
    proc = empty["tile"]
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for r in results:
        assert r["status"] == "tiled" and r["n_tiles"] == 0
        assert r["warning"] == (
            f"{r['store']}: no tiles: the region of interest {empty['roi']} covers 0.1% of the slide and no 224 px "
            "patch at 0.5 um/px has 25% of its area inside it; draw a larger region, or lower --min-tissue")
        assert f"warning: {r['warning']}" in proc.stderr


def test_tile_names_no_tissue_and_a_slide_smaller_than_a_patch(tmp_path, svs):
    blank = tmp_path / "blank.tiff"  # a scan of an empty glass: white, with a recorded resolution
    tifffile.imwrite(blank, np.full((1024, 1024, 3), 244, np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    proc = run_cli("tile", str(blank), "-o", str(tmp_path / "a"), "--no-progress")
    assert proc.returncode == 0 and "no tiles: no tissue found on the slide (tissue method" in proc.stderr
    proc = run_cli("tile", str(svs), "--patch", "4096", "-o", str(tmp_path / "b"), "--no-progress")
    assert proc.returncode == 0
    assert "no tiles: the slide (2220 x 2967 px at level 0) is smaller than one 4096 px patch" in proc.stderr


def test_extract_warns_that_the_feature_store_is_empty(empty):
    for r in empty["extract"]:
        assert r.status == "extracted" and r.n_tiles == 0
        assert any("the tile store holds no tiles, so its FeatureStore is empty" in w for w in r.warnings)


def test_training_leaves_empty_bags_out_with_a_warning_and_predict_gives_no_score(empty, mil_cohort, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(mil_cohort["features"], features)
    for r in empty["extract"]:  # the empty stores replace the slides' real ones
        shutil.rmtree(features / f"{r.slide_id}.zarr")
        shutil.copytree(r.store, features / f"{r.slide_id}.zarr")
    out = tmp_path / "run"
    proc = run_cli("train", str(features), "--labels", str(mil_cohort["labels"]), "-o", str(out), "--head", "mean",
                   "--epochs", "1", "--min-epochs", "1", "--bootstrap", "0", "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    # (one epoch of a mean head may also leave a fold model that learned nothing: a second, separate warning)
    (warning,) = [w for w in run["warnings"] if "features are empty" in w]
    assert "2 labelled slide(s) left out because their features are empty (no tiles): train_000, train_001" in warning
    assert f"warning: {warning}" in proc.stderr and run["labels"]["slides"] == 10
    proc = run_cli("predict", str(features / "train_000.zarr"), "--model", str(out), "-o", str(tmp_path / "pred"),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    (pred,) = json.loads(proc.stdout)
    assert pred["predicted"] is None and all(np.isnan(v) for v in pred["slide_scores"].values())
    assert "holds no rows (the slide has no tiles), so it gets no score" in pred["warning"] in proc.stderr
    labels = tmp_path / "only_empty.csv"
    labels.write_text("slide_id,patient_id,label\ntrain_000,p0,normal\ntrain_001,p1,tumour\n")
    with pytest.raises(LabelsError, match="every labelled slide's features are empty"):
        train_cohort([features], labels, tmp_path / "none", TrainConfig(max_epochs=1, bootstrap=0), progress=False)
