"""Corrections that match no slide, no tile or no class of the model are reported, never dropped silently:
one clear error when nothing usable is left (naming the file and the fix), else a listed warning (in
run.json's warnings and on the CLI's stderr). docs/review.md lists each case."""

from __future__ import annotations

import json

import pytest
import qupath_edit as qe
from test_review_roundtrip import _training_slide, exported, weak_run  # noqa: F401  (module fixtures)
from typer.testing import CliRunner

from pathweak.errors import ConfigError
from pathweak.features import FeatureStore
from pathweak.heatmap.corrections import read_corrections
from pathweak.train import TrainConfig, read_labels, train_cohort
from pathweak.train.instance_labels import Corrections, SlideCorrections, attach_instance_labels
from pathweak_cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _coords(mil_cohort, sid):
    return FeatureStore.open(mil_cohort["features"] / f"{sid}.zarr").coords


def _polygon_file(path, mil_cohort, sid, name, tile=0, dx=0.0):
    x, y = map(float, _coords(mil_cohort, sid)[tile])
    return qe.write(path, [qe.annotation(qe.tile_ring(x + dx, y, 224, 224), name)])


def _train(mil_cohort, out, corrections, **cfg):
    config = TrainConfig(head="abmil", seeds=(0,), max_epochs=1, min_epochs=0, patience=1, bootstrap=0, device="cpu", **cfg)
    return train_cohort([mil_cohort["features"]], mil_cohort["labels"], out, config, progress=False,
                        instance_labels=corrections)


def test_missing_path_and_a_folder_without_correction_files(mil_cohort, tmp_path):
    with pytest.raises(ConfigError, match="instance labels not found"):
        read_corrections(tmp_path / "nope", [mil_cohort["features"]])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"no \.geojson, \.json or \.csv file in the folder \(found notes\.txt"):
        read_corrections(tmp_path, [mil_cohort["features"]])


def test_a_file_of_another_slide(mil_cohort, tmp_path):
    lone = _polygon_file(tmp_path / "one" / "slide_from_elsewhere.geojson", mil_cohort, "train_000", "tumour")
    with pytest.raises(ConfigError) as err:
        read_corrections(lone, [mil_cohort["features"]])
    assert str(lone) in str(err.value) and "matches no slide of the features" in str(err.value)
    assert "<slide_id>.geojson" in str(err.value)
    # in a folder: the file is listed as not used, the others are read
    folder = tmp_path / "many"
    _polygon_file(folder / "slide_from_elsewhere.geojson", mil_cohort, "train_000", "tumour")
    _polygon_file(folder / "train_000.geojson", mil_cohort, "train_000", "tumour")
    corr = read_corrections(folder, [mil_cohort["features"]])
    assert list(corr.slides) == ["train_000"]
    assert any("slide_from_elsewhere.geojson: the file name matches no slide" in w for w in corr.warnings)
    assert [f["slide"] for f in corr.files] == [None, "train_000"]


def test_file_names_match_slides_as_qupath_names_them(tmp_path):
    from pathweak.heatmap.review_files import slide_of

    ids = {"train_000", "train_0001", "s"}
    assert slide_of(tmp_path / "train_000.geojson", ids) == "train_000"
    assert slide_of(tmp_path / "train_000.svs.geojson", ids) == "train_000"
    assert slide_of(tmp_path / "train_0001-corrections.json", ids) == "train_0001"
    assert slide_of(tmp_path / "train_000 reviewed by AB.geojson", ids) == "train_000"
    assert slide_of(tmp_path / "train_0002.geojson", ids) is None


def test_objects_outside_the_slide(mil_cohort, tmp_path):
    far = qe.write(tmp_path / "a" / "train_000.geojson",
                   [qe.annotation(qe.tile_ring(-5000.0, -5000.0, 300, 300), "tumour")])
    with pytest.raises(ConfigError) as err:
        read_corrections(far, [mil_cohort["features"]])
    msg = str(err.value)
    assert "every object lies outside slide train_000's level-0 extent" in msg and "bounds x -5000..-4700" in msg
    assert str(far) in msg and "\n" not in msg
    # some inside, some outside: the outside ones are counted and warned about
    x, y = map(float, _coords(mil_cohort, "train_000")[0])
    mixed = qe.write(tmp_path / "b" / "train_000.geojson", [qe.annotation(qe.tile_ring(x, y, 224, 224), "tumour"),
                                                            qe.annotation(qe.tile_ring(1e6, 1e6, 10, 10), "tumour")])
    corr = read_corrections(mixed, [mil_cohort["features"]])
    assert corr.files[0]["not_used"] == {"objects outside the slide": 1}
    assert any("not used: 1 objects outside the slide" in w for w in corr.warnings)


def test_an_object_on_no_tile(mil_cohort, tmp_path):
    """Inside the slide but over its white margin, where no tile was cut."""
    path = qe.write(tmp_path / "train_000.geojson", [qe.annotation(qe.tile_ring(10.0, 10.0, 150, 150), "tumour"),
                                                     _tile_annotation(mil_cohort, "train_000", 3, "normal")])
    corr = read_corrections(path, [mil_cohort["features"]])
    assert corr.slides["train_000"].rows.tolist() == [3]
    assert corr.files[0]["not_used"] == {"objects covering no tile by >= 0.5 of its area": 1}
    assert any("covering no tile" in w for w in corr.warnings)


def _tile_annotation(mil_cohort, sid, tile, name):
    x, y = map(float, _coords(mil_cohort, sid)[tile])
    return qe.annotation(qe.tile_ring(x, y, 224, 224), name)


def test_a_class_the_model_does_not_have(mil_cohort, tmp_path):
    sid = _training_slide(mil_cohort, "tumour")
    path = qe.write(tmp_path / "c" / f"{sid}.geojson", [_tile_annotation(mil_cohort, sid, 0, "Stroma"),
                                                        _tile_annotation(mil_cohort, sid, 1, "Tumour")])
    run = _train(mil_cohort, tmp_path / "run", read_corrections(path, [mil_cohort["features"]]))
    il = run.summary["instance_labels"]
    assert il["per_slide"] == {sid: {"tumour": 1}}  # "Tumour" is the model's "tumour" (case-insensitive, unique)
    assert il["left_out"]["unknown_classes"] == {"Stroma": 1}
    assert any("classes the model does not have were left out: 'Stroma' (1)" in w for w in run.summary["warnings"])
    # nothing but unknown classes: an error before anything is written
    only = qe.write(tmp_path / "d" / f"{sid}.geojson", [_tile_annotation(mil_cohort, sid, 0, "Stroma")])
    with pytest.raises(ConfigError, match="no correction matches a labelled slide's tile with one of the model's classes"):
        _train(mil_cohort, tmp_path / "run2", read_corrections(only, [mil_cohort["features"]]))
    assert not (tmp_path / "run2").exists()


def test_detections_exported_without_measurements_and_unclassified_annotations(exported, mil_cohort, tmp_path):
    entry = exported[0]
    features = qe.load(entry["file"])
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    qe.reclassify(detections[0], "tumour" if detections[0]["properties"]["classification"]["name"] == "normal" else "normal")
    qe.reclassify(detections[1], None)  # Set classification > Unclassified: not a class to learn
    sid = entry["slide_id"]
    extra = [_tile_annotation(mil_cohort, sid, 2, None), _tile_annotation(mil_cohort, sid, 3, "normal")]
    bare = qe.write(tmp_path / "bare" / f"{sid}.geojson", features + extra, measurements=False)
    corr = read_corrections(bare, [mil_cohort["features"]])
    assert corr.slides[sid].rows.tolist() == [3]  # only the classified annotation
    not_used = corr.files[0]["not_used"]
    assert not_used["detections without the review export's class measurement"] == len(detections)
    assert not_used["annotations without a class"] == 1
    [warning] = [w for w in corr.warnings if str(bare) in w]
    assert "detections without the review export's class measurement" in warning and "annotations without a class" in warning
    # with measurements: the Unclassified detection is counted, not used, and not a warning
    kept = read_corrections(qe.write(tmp_path / "kept" / f"{sid}.geojson", features), [mil_cohort["features"]])
    assert kept.files[0]["not_used"]["detections set to Unclassified"] == 1
    assert kept.slides[sid].rows.tolist() == [0]


def test_tiles_covered_equally_by_two_classes(mil_cohort, tmp_path):
    path = qe.write(tmp_path / "train_000.geojson", [_tile_annotation(mil_cohort, "train_000", 0, "tumour"),
                                                     _tile_annotation(mil_cohort, "train_000", 0, "normal"),
                                                     _tile_annotation(mil_cohort, "train_000", 1, "normal")])
    corr = read_corrections(path, [mil_cohort["features"]])
    assert corr.slides["train_000"].rows.tolist() == [1]
    assert any("1 tile(s) covered equally by corrections of different classes: not used" in w for w in corr.warnings)


def test_a_corrected_tumour_tile_in_a_normal_slide(mil_cohort, tmp_path):
    sid = _training_slide(mil_cohort, "normal")
    path = qe.write(tmp_path / "e" / f"{sid}.geojson", [_tile_annotation(mil_cohort, sid, 0, "tumour"),
                                                        _tile_annotation(mil_cohort, sid, 1, "normal")])
    corr = read_corrections(path, [mil_cohort["features"]])
    slide = _train(mil_cohort, tmp_path / "slide", corr).summary  # default rule: the slide label wins
    assert slide["instance_labels"]["per_slide"] == {sid: {"normal": 1}}
    assert slide["instance_labels"]["contradictions"]["tiles"] == [
        {"slide": sid, "row": 0, "tile_class": "tumour", "slide_label": "normal"}]
    assert any("contradict the slide label" in w and "left out (the slide label wins)" in w for w in slide["warnings"])
    tile = _train(mil_cohort, tmp_path / "tile", read_corrections(path, [mil_cohort["features"]]),
                  contradictions="tile").summary
    assert tile["instance_labels"]["per_slide"] == {sid: {"normal": 1, "tumour": 1}}
    assert any("trained on as corrected (rule: tile)" in w for w in tile["warnings"])
    with pytest.raises(ConfigError, match=rf"1 corrected tile\(s\) contradict their slide's label \(first: slide {sid}"):
        _train(mil_cohort, tmp_path / "error", read_corrections(path, [mil_cohort["features"]]), contradictions="error")
    assert not (tmp_path / "error").exists()


def test_instance_labels_need_a_classification_task(mil_cohort, tmp_path):
    labels = tmp_path / "labels.csv"
    table = read_labels(mil_cohort["labels"])
    labels.write_text("slide_id,patient_id,label\n" + "".join(
        f"{s},{p},{0.5 + 0.01 * i}\n" for i, (s, p) in enumerate(zip(table.slide_ids, table.patient_ids, strict=True))))
    regression = read_labels(labels)
    corr = Corrections({"train_000": SlideCorrections(__import__("numpy").array([0]), ["tumour"])}, source="x.geojson")
    with pytest.raises(ConfigError, match="x.geojson: instance labels need a classification task, not regression"):
        attach_instance_labels(regression, corr, 0, "slide")


def test_ground_truth_csv_as_instance_labels(mil_cohort, tmp_path):
    """`pathweak ground-truth`'s CSV: a tile takes the class whose fraction is largest and >= the overlap."""
    sid = "train_000"
    x, y = map(float, _coords(mil_cohort, sid)[0])
    ann = qe.write(tmp_path / "ann.geojson", [qe.annotation(qe.tile_ring(x, y, 224 + 112, 224), "tumour")])
    csv_path = tmp_path / "gt" / f"{sid}.csv"
    store = mil_cohort["root"] / "tiles" / f"{sid}.zarr"
    result = runner.invoke(app, ["ground-truth", str(store), str(ann), "--class", "tumour", "-o", str(csv_path)])
    assert result.exit_code == 0, result.output
    corr = read_corrections(csv_path, [mil_cohort["features"]])
    assert corr.slides[sid].rows.tolist() == [0, 1] and corr.slides[sid].classes == ["tumour", "tumour"]
    assert corr.files[0]["used"] == {"rows": 2} and corr.files[0]["kind"] == "csv"
    assert corr.files[0]["not_used"] == {"rows in no class by >= 0.5": len(_coords(mil_cohort, sid)) - 2}
    assert not corr.warnings  # rows below the overlap are expected, not a mistake
    # the CSV of another slide's tiles: refused
    other = tmp_path / "gt2" / "train_001.csv"
    other.parent.mkdir()
    other.write_text("x,y,tumour\n5,5,1\n")
    with pytest.raises(ConfigError, match="none of the CSV's 1 tiles"):
        read_corrections(other, [mil_cohort["features"]])


def test_cli_refusal_is_one_line_and_writes_no_run(mil_cohort, tmp_path):
    lone = _polygon_file(tmp_path / "elsewhere.geojson", mil_cohort, "train_000", "tumour")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]), "-o", str(out),
                                 "--epochs", "1", "--device", "cpu", "--no-progress", "--instance-labels", str(lone)])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {lone}: the file name matches no slide"), result.output
    assert not out.exists()


def test_cli_lists_the_warnings(mil_cohort, tmp_path):
    sid = _training_slide(mil_cohort, "tumour")
    folder = tmp_path / "corr"
    qe.write(folder / f"{sid}.geojson", [_tile_annotation(mil_cohort, sid, 0, "tumour"),
                                        _tile_annotation(mil_cohort, sid, 1, "Necrosis")])
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]), "-o", str(out),
                                 "--epochs", "1", "--min-epochs", "0", "--bootstrap", "0", "--device", "cpu", "--no-progress",
                                 "--instance-labels", str(folder)])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "'Necrosis' (1)" in result.output
    assert any("'Necrosis' (1)" in w for w in json.loads((out / "run.json").read_text())["warnings"])


def test_corrections_do_not_combine_with_label_augmentation_or_encoder_finetuning(mil_cohort, tmp_path):
    """Two combinations that have no meaning yet are one clear error each, with no run written."""
    sid = _training_slide(mil_cohort, "tumour")
    corr = read_corrections(_polygon_file(tmp_path / "c" / f"{sid}.geojson", mil_cohort, sid, "tumour"),
                            [mil_cohort["features"]])
    out = tmp_path / "sla"
    with pytest.raises(ConfigError, match="do not combine with label augmentation"):
        _train(mil_cohort, out, corr, label_augmentation="rotation")
    assert not out.exists()
    out = tmp_path / "e2e"
    result = runner.invoke(app, ["train", str(mil_cohort["root"] / "tiles"), "--labels", str(mil_cohort["labels"]),
                                 "-o", str(out), "--head", "ins", "--finetune-encoder", "timm:vit_tiny_patch16_224",
                                 "--instance-labels", str(tmp_path / "c"), "--device", "cpu", "--no-progress"])
    assert result.exit_code != 0 and "does not combine with --finetune-encoder" in result.output, result.output
    assert not out.exists()
