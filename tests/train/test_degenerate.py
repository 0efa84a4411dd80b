"""A robust ensemble: no fold keeps the weights of an epoch before ``min_epochs`` (an untrained model whose
validation loss is lowest by chance), patience restarts there, and a fold model that learned nothing is
recognised on its own training slides, flagged in run.json and the report, and left out of the average."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from pathweak.store.open import read_attrs
from pathweak.train import TrainConfig, load_models, predict_slides, train_cohort
from pathweak.train.degenerate import ensemble_members, fit_check

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"bootstrap": 0, "device": "cpu"}


def _fold(mil_cohort, cfg: TrainConfig, labels=None):
    from pathweak.features.bank import load_feature_bank
    from pathweak.store.features import FeatureStore, find_feature_stores
    from pathweak.train.fit import fit_head
    from pathweak.train.labels import read_labels
    from pathweak.train.splits import make_folds

    stores = [FeatureStore.open(p) for p in find_feature_stores([mil_cohort["features"]])]
    table = read_labels(labels or mil_cohort["labels"], [s.slide_id for s in stores])
    (fold,) = make_folds(table, cfg.folds)
    bank = load_feature_bank(stores, slide_ids=table.slide_ids, device="cpu", stream=False, progress=False)
    return fit_head(bank, table, fold, cfg, seed=0)


def test_no_epoch_before_min_epochs_is_kept_and_patience_counts_from_there(mil_cohort, tmp_path):
    """Validation slides whose labels contradict the training slides (as a one-class validation set of one
    or two slides can): the less trained the model, the lower its validation loss, so epoch 0 is the
    best. It is not kept, and patience counts from the first epoch that may be kept."""
    import pandas as pd

    labels = pd.read_csv(mil_cohort["labels"])
    flip = labels["slide_id"].isin(["test_000", "test_002"])
    labels.loc[flip, "label"] = labels.loc[flip, "label"].map({"normal": "tumour", "tumour": "normal"})
    labels.loc[flip, "split"] = "val"
    labels.to_csv(tmp_path / "labels.csv", index=False)
    cfg = TrainConfig(head="abmil", seeds=(0,), max_epochs=14, min_epochs=6, patience=2, lr=5e-3, **TINY)
    fit = _fold(mil_cohort, cfg, tmp_path / "labels.csv")
    losses = [h["val_loss"] for h in fit.history]
    assert int(np.nanargmin(losses)) < cfg.min_epochs - 1  # the setting: the lowest loss comes early
    assert fit.best_epoch >= cfg.min_epochs - 1
    assert fit.best_val_loss == pytest.approx(min(losses[cfg.min_epochs - 1 :]))
    assert fit.epochs >= cfg.min_epochs + cfg.patience - 1  # the patience began at the first epoch it may keep


def test_fit_check_tells_a_head_that_learned_nothing(mil_cohort):
    """On its own training slides an untrained head (as good as constant) is degenerate; a trained one not."""
    good = _fold(mil_cohort, TrainConfig(head="abmil", seeds=(0,), max_epochs=6, min_epochs=3, patience=3, lr=1e-3,
                                         **TINY))
    stuck = _fold(mil_cohort, TrainConfig(head="abmil", seeds=(0,), max_epochs=1, min_epochs=1, patience=1,
                                          lr=1e-12, **TINY))
    from pathweak.features.bank import load_feature_bank
    from pathweak.store.features import FeatureStore, find_feature_stores
    from pathweak.train.infer import predict_rows
    from pathweak.train.labels import read_labels
    from pathweak.train.splits import make_folds

    stores = [FeatureStore.open(p) for p in find_feature_stores([mil_cohort["features"]])]
    table = read_labels(mil_cohort["labels"], [s.slide_id for s in stores])
    (fold,) = make_folds(table, 5)
    bank = load_feature_bank(stores, slide_ids=table.slide_ids, device="cpu", stream=False, progress=False)
    checks = {}
    for name, fit in (("good", good), ("stuck", stuck)):
        out = predict_rows(fit.head, bank, fold.train, table.task)
        checks[name] = fit_check(table.task, table.classes, table.targets[fold.train], out)
    assert checks["stuck"]["degenerate"] and not checks["good"]["degenerate"], checks
    assert checks["stuck"]["constant_loss"] == pytest.approx(math.log(2))
    plan = ensemble_members({"seed0_fold0": checks["good"], "seed1_fold0": checks["stuck"]})
    assert plan["members"] == ["seed0_fold0"] and plan["excluded"] == ["seed1_fold0"] and plan["warnings"]


@pytest.fixture(scope="module")
def stuck_run(mil_cohort, tmp_path_factory):
    """A run whose fold models all learned nothing (a learning rate of 1e-12)."""
    cfg = TrainConfig(head="abmil", seeds=(0, 1), max_epochs=2, min_epochs=1, patience=1, lr=1e-12, **TINY)
    out = tmp_path_factory.mktemp("stuck") / "run"
    return train_cohort([mil_cohort["features"]], mil_cohort["labels"], out, cfg, progress=False)


def test_a_run_records_its_degenerate_folds_and_the_report_flags_them(stuck_run, mil_cohort, tmp_path):
    s = stuck_run.summary
    folds = [f for v in s["seeds"].values() for f in v["folds"]]
    assert all(f["fit_check"]["degenerate"] for f in folds)
    ensemble = s["ensemble"]
    assert ensemble["degenerate"] == ["seed0_fold0", "seed1_fold0"] and ensemble["excluded"] == []
    assert "every fold model learned nothing" in ensemble["warnings"][0]
    assert json.loads((stuck_run.out_dir / "run.json").read_text())["ensemble"] == ensemble
    from pathweak.report import write_report

    page = write_report(stuck_run.out_dir, slides=1).read_text()
    assert "<h2>Degenerate fold models</h2>" in page and "seed1_fold0" in page and "Every fold model is degenerate" in page
    assert "(degenerate, left out)" not in page or "seed0_fold0: " in page


def test_the_average_leaves_a_degenerate_model_out(mil_cohort, tmp_path):
    """A run where one of two fold models is degenerate: predict averages the other one only, says which it
    left out, and `pathweak predict` warns."""
    cfg = TrainConfig(head="abmil", seeds=(0, 1), max_epochs=4, min_epochs=2, patience=2, lr=1e-3, **TINY)
    run = train_cohort([mil_cohort["features"]], mil_cohort["labels"], tmp_path / "run", cfg, progress=False)
    stuck = train_cohort([mil_cohort["features"]], mil_cohort["labels"], tmp_path / "stuck",
                         TrainConfig(head="abmil", seeds=(1,), max_epochs=1, min_epochs=1, patience=1, lr=1e-12, **TINY),
                         progress=False)
    # the run as it would be had seed 1's fold kept an untrained model: its model and fit check swapped in
    folder = run.out_dir / "models" / "seed1_fold0"
    shutil.rmtree(folder)
    shutil.copytree(stuck.out_dir / "models" / "seed1_fold0", folder)
    summary = json.loads((run.out_dir / "run.json").read_text())
    checks = {f"seed{k}_fold{f['fold']}": f["fit_check"] for k, v in summary["seeds"].items() for f in v["folds"]}
    checks["seed1_fold0"] = stuck.summary["seeds"]["1"]["folds"][0]["fit_check"]
    summary["ensemble"] = ensemble_members(checks)
    (run.out_dir / "run.json").write_text(json.dumps(summary))
    assert summary["ensemble"]["excluded"] == ["seed1_fold0"]

    assert [m.path.name for m in load_models(run.out_dir)] == ["seed0_fold0"]
    averaged = predict_slides(run.out_dir, [mil_cohort["features"]], tmp_path / "a", progress=False)
    alone = predict_slides(run.out_dir / "models" / "seed0_fold0", [mil_cohort["features"]], tmp_path / "b",
                           progress=False)
    for a, b in zip(averaged, alone, strict=True):
        assert a.slide_scores == b.slide_scores and a.excluded == ["seed1_fold0"]
        assert (read_attrs(a.results) or {})["model"]["excluded"] == ["seed1_fold0"]
    from conftest import run_cli

    proc = run_cli("predict", str(mil_cohort["features"]), "--model", str(run.out_dir), "-o", str(tmp_path / "c"))
    assert proc.returncode == 0 and "warning: degenerate fold model(s) seed1_fold0 left out" in proc.stderr
