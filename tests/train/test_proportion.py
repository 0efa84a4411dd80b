"""Label proportions (LLP) on a real-tile cohort: label checks, the bag-level proportion loss going down
on real features, a run reporting slide MAE and R², and per-tile probabilities in results stores that the
heatmap and QuPath exports read unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pathweak.errors import LabelsError
from pathweak.train import TrainConfig, predict_slides, read_labels, train_cohort
from pathweak.train.proportion import proportion_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def proportion_labels(cohort, tmp_path):
    """Each slide's true tumour fraction (pseudo_slides.json) as its label, with the cohort's split."""
    rows = pd.read_csv(cohort["labels"])
    meta = json.loads((cohort["root"] / "pseudo_slides.json").read_text())
    share = {s["slide_id"]: s["tumour_fraction"] for s in meta["slides"]}
    out = pd.DataFrame({"slide_id": rows["slide_id"], "patient_id": rows["patient_id"],
                        "label": [share[s] for s in rows["slide_id"]], "split": rows["split"]})
    path = tmp_path / "proportion.csv"
    out.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("text, expected", [
    ("slide_id,patient_id,label\na,p1,0.2\nb,p2,1.4\nc,p3,-0.1\n", "rows 3, 4 have label 1.4, outside [0, 1]"),
    ("slide_id,patient_id,label\na,p1,20\nb,p2,45\n", "outside [0, 1] (percentages? divide by 100)"),
    ("slide_id,patient_id,label\na,p1,0.2\nb,p2,high\n", "row 3 has label 'high', not a number"),
    ("slide_id,patient_id,label\na,p1,0.2\nb,p2,\n", "row 3 has an empty label"),
])
def test_bad_proportion_labels_name_the_rows(tmp_path, text, expected):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelsError) as err:
        read_labels(path, task="proportion")
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_proportion_labels_read(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("slide_id,patient_id,label\na,p1,0\nb,p2,0.35\nc,p3,1\n")
    table = read_labels(path, task="proportion")
    assert table.task == "proportion" and table.classes is None and table.targets.tolist() == [0, 0.35, 1]


def test_proportion_loss_is_smallest_at_the_true_share():
    target = torch.tensor([0.0, 0.25, 0.6])
    grid = torch.linspace(0.01, 0.99, 99)
    for p in target:
        losses = torch.stack([proportion_loss(g[None], p[None]) for g in grid])
        assert abs(float(grid[int(losses.argmin())]) - float(p)) <= 0.011


@pytest.mark.parametrize("head", ["abmil", "mean", "dsmil", "wsseg"])
def test_a_few_steps_reduce_the_proportion_loss(mil_cohort, tmp_path, head):
    from pathweak.features.bank import load_feature_bank
    from pathweak.heads import create_head
    from pathweak.train.fit import training_targets
    from pathweak.train.module import MILModule

    table = read_labels(proportion_labels(mil_cohort, tmp_path), task="proportion")
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", dtype="float32",
                             progress=False)
    rows = np.arange(len(table))
    y, _ = training_targets(table, rows)
    torch.manual_seed(0)
    module = MILModule(create_head(head, bank.embed_dim, 1, dropout=0.0), "proportion")
    module.head.eval()
    opt = torch.optim.Adam(module.head.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        return module.set_loss([module.streams(module.head(bank.bag(int(i)).float(), bank.grid(int(i)))) for i in rows], y)

    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert after < before * 0.97, (before, after)


@pytest.fixture(scope="module")
def proportion_run(mil_cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prop")
    cfg = TrainConfig(head="abmil", task="proportion", seeds=(0,), max_epochs=6, min_epochs=2, patience=3, lr=1e-3,
                      bootstrap=50, device="cpu")
    return train_cohort([mil_cohort["features"]], proportion_labels(mil_cohort, tmp), tmp / "run", cfg, progress=False)


def test_proportion_run_reports_mae_and_r2(proportion_run):
    s = proportion_run.summary
    assert s["task"] == "proportion" and {"mae", "r2"} <= set(s["metrics"]) and "mae" in s["seeds"]["0"]["ci95"]
    pred = pd.read_csv(proportion_run.out_dir / "predictions.csv")
    assert list(pred.columns) == ["slide_id", "patient_id", "seed", "fold", "model", "proportion", "label"]
    assert pred["proportion"].between(0, 1).all()
    assert s["seeds"]["0"]["metrics"]["mae"] == pytest.approx(float(np.mean(np.abs(pred["proportion"] - pred["label"]))),
                                                              rel=1e-4)


def test_predict_writes_per_tile_probabilities_that_exports_read(proportion_run, mil_cohort, tmp_path):
    from pathweak.heatmap import ExportOptions, export, load_scores

    (r,) = predict_slides(proportion_run.out_dir, [mil_cohort["features"] / "test_001.zarr"], tmp_path, progress=False)
    ts = load_scores(r.results)
    assert {"prob_positive", "attention"} <= set(ts.scores) and set(r.slide_scores) == {"proportion"}
    p = ts.scores["prob_positive"]
    assert ((p >= 0) & (p <= 1)).all() and r.slide_scores["proportion"] == pytest.approx(float(p.mean()), rel=1e-4)
    geo = export(ts, "geojson", tmp_path / "test_001.geojson", ExportOptions(scores=("prob_positive",)))
    feats = json.loads(geo.read_text())["features"]
    assert len(feats) == len(p) and "prob_positive" in json.dumps(feats[0]["properties"])
    png = export(ts, "png", tmp_path / "test_001.png", ExportOptions(scores=("prob_positive",)))
    assert png.stat().st_size > 1000
