"""The review loop end to end on real tiles: `pathweak review export` writes classified detections and a
ranked review queue per slide; the file is edited as a pathologist does in QuPath (3 detections
reclassified, 1 polygon drawn) and written back as QuPath writes it; `pathweak train --instance-labels`
trains on the corrections and run.json records exactly which tiles it saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
import qupath_edit as qe
from typer.testing import CliRunner

from pathweak.features import FeatureStore
from pathweak.heatmap.review_files import exported_class, exported_class_key
from pathweak.io.qupath_geojson import read_qupath_geojson
from pathweak.train import TrainConfig, make_folds, read_labels, train_cohort
from pathweak_cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ["normal", "tumour"]


@pytest.fixture(scope="module")
def weak_run(mil_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("review") / "abmil"
    cfg = TrainConfig(head="abmil", seeds=(0,), max_epochs=3, min_epochs=1, patience=2, lr=1e-3, bootstrap=0, device="cpu")
    train_cohort([mil_cohort["features"]], mil_cohort["labels"], out, cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def exported(weak_run):
    result = runner.invoke(app, ["review", "export", str(weak_run), "--queue", "3", "--seed", "0", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["files"]


def test_review_export_classifies_every_tile_and_ranks_a_queue(exported, mil_cohort, weak_run):
    assert len(exported) == 12 and all(f["file"].startswith(str(weak_run / "review")) for f in exported)
    for entry in exported:
        features = qe.load(entry["file"])
        store = FeatureStore.open(mil_cohort["features"] / f"{entry['slide_id']}.zarr")
        detections = [f for f in features if f["properties"]["objectType"] == "detection"]
        review = [f for f in features if f["properties"]["objectType"] == "annotation"]
        assert len(detections) == len(store) == entry["tiles"]
        for f in detections:
            props = f["properties"]
            shown = props["classification"]["name"]
            assert shown in CLASSES and len(props["classification"]["color"]) == 3
            assert CLASSES[int(props["measurements"][exported_class_key(CLASSES)])] == shown
            assert {"prob_normal", "prob_tumour", "attention", "review priority"} <= set(props["measurements"])
            # the class shown is the more likely one (ABMIL has no pseudo-label or mask)
            m = props["measurements"]
            assert shown == ("tumour" if m["prob_tumour"] > m["prob_normal"] else "normal")
        # the queue: Review annotations ranked 1..3 on the tiles of highest priority, highest first
        assert [f["properties"]["classification"]["name"] for f in review] == ["Review"] * 3
        assert [f["properties"]["measurements"]["rank"] for f in review] == [1, 2, 3]
        assert [f["properties"]["name"] for f in review] == ["review 1", "review 2", "review 3"]
        priority = np.array([f["properties"]["measurements"]["review priority"] for f in detections])
        top = np.sort(priority)[::-1][:3]
        assert np.allclose([f["properties"]["measurements"]["priority"] for f in review], top, atol=1e-6)
        boxes = {tuple(np.asarray(f["geometry"]["coordinates"][0]).min(0)) for f in review}
        assert boxes == {tuple(map(float, store.coords[t])) for t in entry["queue"]}
    # pathweak's one QuPath reader reads it back, the exported class included
    objects = read_qupath_geojson(exported[0]["file"])
    assert sum(o.object_type == "detection" for o in objects) == exported[0]["tiles"]
    assert all(exported_class(o.measurements) == o.classification for o in objects if o.object_type == "detection")


def _training_slide(mil_cohort, label):
    """A slide of ``label`` that fold 0 trains on (not carved off for validation)."""
    table = read_labels(mil_cohort["labels"])
    cfg = TrainConfig()
    fold = make_folds(table, cfg.folds, cfg.split_seed, cfg.val_fraction)[0]
    return next(table.slide_ids[i] for i in fold.train if table.labels[i] == label)


def test_round_trip_trains_on_exactly_the_corrected_tiles(exported, mil_cohort, tmp_path):
    sid = _training_slide(mil_cohort, "tumour")
    entry = next(f for f in exported if f["slide_id"] == sid)
    features = qe.load(entry["file"])
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    coords = FeatureStore.open(mil_cohort["features"] / f"{sid}.zarr").coords
    # 3 tiles shown as normal, set to tumour (Set classification) ...
    normal = [i for i, f in enumerate(detections) if f["properties"]["classification"]["name"] == "normal"]
    flipped = normal[:3]
    for i in flipped:
        qe.reclassify(detections[i], "tumour")
    # ... and one polygon drawn as normal over two whole tiles side by side (and a sliver of the row below)
    pairs = [(a, b) for a in range(len(coords)) for b in range(len(coords))
             if coords[b, 0] == coords[a, 0] + 224 and coords[b, 1] == coords[a, 1] and a not in flipped and b not in flipped]
    a, b = pairs[0]
    x, y = map(float, coords[a])
    features.append(qe.annotation(qe.tile_ring(x, y, 448, 224 + 40), "normal", (90, 90, 180)))
    folder = tmp_path / "corrections"
    qe.write(folder / f"{sid}.geojson", features)

    out = tmp_path / "corrected"
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]), "-o", str(out),
                                 "--head", "abmil", "--epochs", "2", "--min-epochs", "1", "--bootstrap", "0",
                                 "--device", "cpu", "--no-progress", "--instance-labels", str(folder)])
    assert result.exit_code == 0, result.output
    assert "instance labels: 5 tiles (normal 2, tumour 3) in 1 slides" in result.output
    il = json.loads((out / "run.json").read_text())["instance_labels"]
    assert il["tiles"] == 5 and il["per_class"] == {"normal": 2, "tumour": 3}
    assert il["per_slide"] == {sid: {"normal": 2, "tumour": 3}}
    assert il["trained_on"] == [{"fold": 0, "slides": 1, "tiles": 5}]
    [record] = il["files"]
    assert record["slide"] == sid and record["used"] == {"corrected detections": 3, "annotations": 1}
    assert record["not_used"] == {"review queue annotations left as Review": 3,
                                  "detections left as exported": len(detections) - 3}
    assert il["sha256"] and record["sha256"] and il["source"] == str(folder) and il["overlap"] == 0.5
    assert il["contradictions"] == {"rule": "slide", "tiles": []}


def test_which_tiles_and_classes_reach_training(exported, mil_cohort, tmp_path):
    """The corrected rows themselves: the reclassified detections' tiles and the polygon's two tiles."""
    from pathweak.heatmap.corrections import read_corrections

    sid = _training_slide(mil_cohort, "tumour")
    entry = next(f for f in exported if f["slide_id"] == sid)
    features = qe.load(entry["file"])
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    qe.reclassify(detections[5], "tumour" if detections[5]["properties"]["classification"]["name"] == "normal" else "normal")
    coords = FeatureStore.open(mil_cohort["features"] / f"{sid}.zarr").coords
    x, y = map(float, coords[0])
    features.append(qe.annotation(qe.tile_ring(x + 10, y + 10, 200, 200), "tumour"))  # 80 % of tile 0
    path = qe.write(tmp_path / f"{sid}.geojson", features)
    corr = read_corrections(path, [mil_cohort["features"]])
    rows = dict(zip(corr.slides[sid].rows.tolist(), corr.slides[sid].classes, strict=True))
    assert rows == {5: detections[5]["properties"]["classification"]["name"], 0: "tumour"}
    # a higher overlap threshold leaves the 80 % tile out, and says so
    strict = read_corrections(path, [mil_cohort["features"]], overlap=0.9)
    assert strict.slides[sid].rows.tolist() == [5]
    assert any("objects covering no tile by >= 0.9" in w for w in strict.warnings)


def test_review_export_from_results_stores(weak_run, mil_cohort, tmp_path):
    """`pathweak predict`'s results stores (their classes from the stores' model record; labels unknown)."""
    from pathweak.heatmap import export_review
    from pathweak.train import predict_slides

    preds = predict_slides(weak_run, [mil_cohort["features"]], tmp_path, progress=False)
    folder = tmp_path / "results" / preds[0].results.split("/")[-2]
    files = export_review(folder, tmp_path / "review", queue=2, seed=1)
    assert sorted(f.slide_id for f in files) == sorted(p.slide_id for p in preds)
    assert all(f.label is None and f.predicted in CLASSES and len(f.queue) == 2 for f in files)
    one = export_review(folder / f"{files[0].slide_id}.zarr", tmp_path / "one", queue=1)
    assert [f.slide_id for f in one] == [files[0].slide_id]
    # a folder that is none of the three: one clear error
    from pathweak.errors import ConfigError

    with pytest.raises(ConfigError, match="not a training run, cohort run or results store"):
        export_review(tmp_path / "review", tmp_path / "x")
