"""Training and prediction on a real-tile cohort: labels-file errors, patient-level splits that never
leak, a cross-validated run with its outputs, a packaged model that predicts identically after reload,
and results stores that the heatmap exports read. Metrics equal scikit-learn's."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import reloaded_and_live
from typer.testing import CliRunner

from pathweak.errors import LabelsError
from pathweak.train import TrainConfig, load_model, load_models, make_folds, predict_slides, read_labels, train_cohort
from pathweak.train.metrics import bootstrap_ci, classification_metrics, regression_metrics
from pathweak_cli.main import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def abmil_run(mil_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "abmil"
    cfg = TrainConfig(head="abmil", seeds=(0, 1), max_epochs=8, min_epochs=2, patience=3, lr=1e-3, bootstrap=200,
                      device="cpu")
    return train_cohort([mil_cohort["features"]], mil_cohort["labels"], out, cfg, progress=False)


# -- labels file ------------------------------------------------------------------------------------------


def _write(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, expected", [
    ("slide_id,patient_id,label\na,p1,x\nb,p2,y\nzzz,p3,x\n", "slide zzz has no features"),
    ("slide_id,patient_id,label\na,p1,x\na,p2,y\n", "slide id 'a' appears more than once (rows 2, 3)"),
    ("slide_id,label\na,x\nb,y\n", "no patient_id column"),
    ("slide_id,patient_id,label\na,p1,x\nb,p2,\n", "row 3 has an empty label"),
    ("slide_id,patient_id,label,split\na,p1,x,train\nb,p2,y,holdout\n", "row 3 has split 'holdout'"),
    ("slide_id,patient_id,label\na,p1,x\nb,p2,x\n", "only one class"),
])
def test_bad_labels_file_is_one_clear_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(LabelsError) as err:
        read_labels(path, available=["a", "b", "c"])
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_unknown_label_and_task_checks(tmp_path):
    path = _write(tmp_path, "slide_id,patient_id,label\na,p1,benign\nb,p2,tumour\nc,p3,tumor\n")
    with pytest.raises(LabelsError, match="row 4 has unknown label 'tumor' \\(known: benign, tumour\\)"):
        read_labels(path, classes=["benign", "tumour"])
    with pytest.raises(LabelsError, match="binary task needs 2 classes"):
        read_labels(path, task="binary")
    assert read_labels(path).task == "multiclass"
    reg = _write(tmp_path, "slide_id,patient_id,label\na,p1,12.5\nb,p2,40\nc,p3,n/a\n", "reg.csv")
    with pytest.raises(LabelsError, match="row 4 has label 'n/a', a missing-value marker"):
        read_labels(reg, task="regression")
    ok = _write(tmp_path, "slide_id,patient_id,label\na,p1,12.5\nb,p2,40\nc,p3,3\n", "ok.csv")
    table = read_labels(ok)
    assert table.task == "regression" and table.classes is None and table.targets.tolist() == [12.5, 40, 3]
    binary = read_labels(_write(tmp_path, "slide_id,patient_id,label\na,p,1\nb,q,0\nc,r,1\n", "b.csv"))
    assert binary.task == "binary" and binary.classes == ["0", "1"] and binary.targets.tolist() == [1, 0, 1]


def test_cli_bad_labels_exits_nonzero_with_one_line_and_no_output(mil_cohort, tmp_path):
    labels = _write(tmp_path, "slide_id,patient_id,label\ntrain_000,p1,normal\ntrain_000,p2,tumour\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(labels),
                                 "-o", str(out), "--no-progress"])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "appears more than once" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_train_never_replaces_a_folder_that_is_not_a_training_run(abmil_run, mil_cohort, tmp_path):
    """`--out` naming a folder of other things (e.g. the run folder holding tiles/ and features/) is refused
    before any training, and what it holds survives; a previous training run is replaced as before."""
    out = tmp_path / "project"
    (out / "tiles").mkdir(parents=True)
    (out / "tiles" / "keep.txt").write_text("slide tiles")
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]),
                                 "-o", str(out), "--epochs", "1", "--no-progress"])
    assert result.exit_code != 0 and "does not hold a training run (it has no run.json)" in result.output
    assert (out / "tiles" / "keep.txt").read_text() == "slide tiles" and not list(tmp_path.glob(".project*"))
    again = train_cohort([mil_cohort["features"]], mil_cohort["labels"], abmil_run.out_dir.parent / "rerun",
                         TrainConfig(head="mean", seeds=(0,), max_epochs=1, min_epochs=1, bootstrap=0, device="cpu"),
                         progress=False)
    replaced = train_cohort([mil_cohort["features"]], mil_cohort["labels"], again.out_dir,
                            TrainConfig(head="max", seeds=(0,), max_epochs=1, min_epochs=1, bootstrap=0, device="cpu"),
                            progress=False)
    assert replaced.summary["config"]["head"] == "max"


# -- splits -----------------------------------------------------------------------------------------------


def test_patient_level_folds_never_leak(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["slide_id,patient_id,label"]
    for p in range(40):  # 40 patients with 1-4 slides each, labels mostly shared within a patient
        base = rng.integers(0, 3)
        for k in range(int(rng.integers(1, 5))):
            label = base if rng.random() < 0.8 else rng.integers(0, 3)
            rows.append(f"s{p}_{k},pat{p},c{label}")
    table = read_labels(_write(tmp_path, "\n".join(rows) + "\n"))
    patients = np.asarray(table.patient_ids)
    for seed in range(3):
        folds = make_folds(table, folds=5, seed=seed)
        tests = np.concatenate([f.test for f in folds])
        assert sorted(tests.tolist()) == list(range(len(table)))  # every slide tested exactly once
        for f in folds:
            sides = [set(patients[getattr(f, s)]) for s in ("train", "val", "test")]
            assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
            assert len(f.train) + len(f.val) + len(f.test) == len(table)
            assert set(table.targets[f.test]) == {0, 1, 2}  # stratified: every class in every test fold
        for a in folds:
            for b in folds:
                if a.index != b.index:
                    assert not set(patients[a.test]) & set(patients[b.test])


def test_split_column_is_used_and_checked(tmp_path):
    text = "slide_id,patient_id,label,split\n" + "".join(
        f"s{i},p{i},{'ab'[i % 2]},{'train' if i < 8 else 'test'}\n" for i in range(12))
    table = read_labels(_write(tmp_path, text))
    (fold,) = make_folds(table)
    assert sorted(fold.test.tolist()) == list(range(8, 12)) and len(fold.val) and set(fold.train) | set(fold.val) == set(range(8))
    leaky = text.replace("s9,p9", "s9,p1")  # patient p1 in train and test
    with pytest.raises(LabelsError, match="patient 'p1' has slides in both train and test"):
        make_folds(read_labels(_write(tmp_path, leaky, "leaky.csv")))


# -- training, packaged models, prediction -----------------------------------------------------------------


def test_cross_validated_run_writes_metrics_predictions_and_models(abmil_run, mil_cohort):
    out, s = abmil_run.out_dir, abmil_run.summary
    assert s["task"] == "binary" and s["classes"] == ["normal", "tumour"] and s["positive_class"] == "tumour"
    assert s["splits"]["source"] == "split column"
    assert set(s["metrics"]) == {"auc", "balanced_accuracy", "f1"}
    assert s["metrics"]["auc"]["n"] == 2 and "std" in s["metrics"]["auc"]
    for seed in ("0", "1"):
        assert set(s["seeds"][seed]["ci95"]) <= {"auc", "balanced_accuracy", "f1"}
        lo, hi = s["seeds"][seed]["ci95"]["balanced_accuracy"]
        assert 0 <= lo <= s["seeds"][seed]["metrics"]["balanced_accuracy"] <= hi <= 1
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["slide_id", "patient_id", "seed", "fold", "model", "prob_normal", "prob_tumour",
                                  "predicted", "label"]
    assert len(pred) == 2 * 4 and set(pred["slide_id"]) == {f"test_{i:03d}" for i in range(4)}
    assert np.allclose(pred[["prob_normal", "prob_tumour"]].sum(axis=1), 1, atol=1e-5)
    per_fold = pd.read_csv(out / "predictions" / "seed1_fold0.csv")
    assert per_fold.equals(pred[pred["seed"] == 1].reset_index(drop=True))
    meta = json.loads((out / "models" / "seed0_fold0" / "model.json").read_text())
    assert meta["head"] == "abmil" and meta["label_map"] == {"normal": 0, "tumour": 1}
    assert meta["feature_dim"] == 192 and meta["encoder"]["encoder_id"] == mil_cohort["features"].name
    assert (out / "splits.csv").exists() and (out / "logs").is_dir()


def test_saved_model_predicts_identically_after_reload(abmil_run, mil_cohort):
    from pathweak.features.bank import load_feature_bank

    fit = abmil_run.fits[0]
    model = load_model(abmil_run.out_dir / "models" / "seed0_fold0")
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    for i in range(len(bank)):
        a, out = reloaded_and_live(model, fit.head, bank, i)
        assert np.array_equal(a.slide, torch.softmax(out.logits, -1).numpy())
        assert np.array_equal(a.attention, out.attention.numpy())
    csv = pd.read_csv(abmil_run.out_dir / "predictions.csv").query("seed == 0").set_index("slide_id")
    for sid, row in csv.iterrows():
        i = bank.index(sid)
        assert np.isclose(model.predict(bank.bag(i), bank.grid(i)).slide[1], row["prob_tumour"], rtol=1e-5)


def test_predict_writes_results_that_heatmaps_read(abmil_run, mil_cohort, tmp_path):
    from pathweak.heatmap import ExportOptions, export, load_scores
    from pathweak.tiling import TileStore

    results = predict_slides(abmil_run.out_dir, [mil_cohort["features"] / "test_001.zarr"], progress=False)
    (r,) = results
    run_id = abmil_run.summary["model_id"]
    assert r.results == str(mil_cohort["root"].resolve() / "results" / run_id / "test_001.zarr")
    ts = load_scores(r.results)  # the heatmap stage's reader, tied to the slide's TileStore
    assert ts.slide_id == "test_001" and set(ts.scores) == {"attention", "prob_normal", "prob_tumour"}
    store = TileStore.open(mil_cohort["root"] / "tiles" / "test_001.zarr")
    assert np.array_equal(ts.coords, store.coords)
    assert np.isclose(ts.scores["attention"].sum(), 1, atol=1e-4)
    # the ensemble of the run's two models, by hand
    models = load_models(abmil_run.out_dir)
    from pathweak.features.bank import load_feature_bank

    bank = load_feature_bank([mil_cohort["features"]], slide_ids=["test_001"], device="cpu", progress=False)
    preds = [m.predict(bank.bag(0), bank.grid(0)) for m in models]
    assert np.allclose(ts.scores["attention"], np.mean([p.attention[:, 0] for p in preds], 0), atol=1e-7)
    assert np.isclose(r.slide_scores["prob_tumour"], np.mean([p.slide[1] for p in preds]), atol=1e-6)
    table = pd.read_csv(mil_cohort["root"] / "results" / run_id / "predictions.csv")
    assert table["slide_id"].tolist() == ["test_001"] and table["model"].tolist() == [run_id]
    png = export(ts, "png", tmp_path / "att.png", ExportOptions(scores=("attention",)))
    assert png.exists() and png.stat().st_size > 0


def test_cli_train_predict_heatmap(mil_cohort, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]),
                                 "-o", str(out), "--head", "mean", "--epochs", "3", "--bootstrap", "50",
                                 "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "balanced_accuracy" in result.output and (out / "run.json").exists()
    result = runner.invoke(app, ["predict", str(mil_cohort["features"]), "--model",
                                 str(out / "models" / "seed0_fold0"), "-o", str(tmp_path), "--name", "m", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "results" / "m").glob("*.zarr"))) == 12
    result = runner.invoke(app, ["heatmap", str(tmp_path / "results" / "m" / "test_003.zarr"), "--out",
                                 str(tmp_path / "maps"), "--score", "prob_tumour", "--format", "geojson"])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "maps").rglob("*.geojson"))


def test_predict_refuses_features_of_another_encoder(abmil_run, mil_cohort, tmp_path):
    import shutil

    from pathweak.errors import ConfigError

    fake = tmp_path / "features" / "other" / "x.zarr"
    shutil.copytree(mil_cohort["features"] / "test_000.zarr", fake)
    meta = json.loads((fake / "zarr.json").read_text())
    meta["attributes"]["encoder"]["encoder_id"] = "other"
    (fake / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="features come from encoder other"):
        predict_slides(abmil_run.out_dir, [fake], progress=False)
    assert not (tmp_path / "results").exists()


def test_regression_run_on_the_tumour_fraction(mil_cohort, tmp_path):
    gt = pd.read_csv(mil_cohort["ground_truth"]).groupby("slide_id")["tumour"].mean() * 100
    labels = pd.read_csv(mil_cohort["labels"])
    labels["label"] = [f"{gt[s]:.2f}" for s in labels["slide_id"]]
    labels.to_csv(tmp_path / "frac.csv", index=False)
    run = train_cohort([mil_cohort["features"]], tmp_path / "frac.csv", tmp_path / "reg",
                       TrainConfig(head="abmil", task="regression", max_epochs=4, bootstrap=50, device="cpu"),
                       progress=False)
    assert set(run.summary["metrics"]) == {"r2", "mae", "pearson_r"}
    pred = pd.read_csv(tmp_path / "reg" / "predictions.csv")
    assert "prediction" in pred.columns and np.isfinite(pred["prediction"]).all()
    meta = json.loads((tmp_path / "reg" / "models" / "seed0_fold0" / "model.json").read_text())
    assert meta["task"] == "regression" and meta["target_scale"]["std"] > 0


# -- metrics ----------------------------------------------------------------------------------------------


def test_metrics_equal_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, mean_absolute_error, r2_score, roc_auc_score

    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 4):
        for _ in range(20):
            n = int(rng.integers(8, 60))
            y = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)])
            prob = np.round(rng.random((n, n_classes)), 1) + 1e-9  # ties included
            prob /= prob.sum(1, keepdims=True)
            m = classification_metrics(y, prob)
            auc = roc_auc_score(y, prob[:, 1]) if n_classes == 2 else roc_auc_score(y, prob, multi_class="ovr")
            f1 = f1_score(y, prob.argmax(1), average="binary" if n_classes == 2 else "macro",
                          labels=None if n_classes == 2 else list(range(n_classes)), zero_division=0)
            assert np.isclose(m["auc"], auc) and np.isclose(m["f1"], f1)
            assert np.isclose(m["balanced_accuracy"], balanced_accuracy_score(y, prob.argmax(1)))
    y = rng.random(30)
    p = y + rng.normal(0, 0.1, 30)
    m = regression_metrics(y, p)
    assert np.isclose(m["r2"], r2_score(y, p)) and np.isclose(m["mae"], mean_absolute_error(y, p))
    ci = bootstrap_ci(classification_metrics, np.array([0, 1] * 20), np.tile([[0.8, 0.2], [0.3, 0.7]], (20, 1)), n=100)
    assert ci["auc"] == [1.0, 1.0] and ci["balanced_accuracy"] == [1.0, 1.0]


def test_cli_help_needs_no_torch():
    import subprocess

    code = ("import sys; from typer.testing import CliRunner; from pathweak_cli.main import app; "
            "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_and_prediction_on_cuda(mil_cohort, tmp_path):
    from pathweak.features.bank import load_feature_bank

    run = train_cohort([mil_cohort["features"]], mil_cohort["labels"], tmp_path / "gpu",
                       TrainConfig(head="transmil", max_epochs=3, bootstrap=0, device="cuda"), progress=False)
    assert run.summary["features"]["device"].startswith("cuda")
    gpu = load_model(tmp_path / "gpu" / "models" / "seed0_fold0", "cuda")
    cpu = load_model(tmp_path / "gpu" / "models" / "seed0_fold0", "cpu")
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    for i in range(3):
        a = gpu.predict(bank.bag(i).cuda(), bank.grid(i).cuda())
        b = cpu.predict(bank.bag(i), bank.grid(i))
        assert np.allclose(a.slide, b.slide, atol=1e-3) and np.allclose(a.attention, b.attention, atol=1e-3)
