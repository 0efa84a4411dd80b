"""Survival on a real-tile cohort: the time/event checks of the labels file, folds stratified by event,
the Cox and discrete-time losses going down on real features for every slide-level head, a run whose
predictions and results stores carry a risk per slide, and concordance from pathweak equal to independent
computations (a brute-force pair count, torchsurv's concordance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pathweak.errors import LabelsError
from pathweak.train import (
    TrainConfig,
    make_folds,
    predict_slides,
    read_labels,
    train_cohort,
)
from pathweak.train.survival import discrete_nll, survival_metrics
from pathweak_cli.main import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
SLIDE_HEADS = ["mean", "max", "abmil", "clam_sb", "clam_mb", "transmil", "dsmil", "wsseg"]


def _write(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def burden(cohort) -> dict[str, float]:
    meta = json.loads((cohort["root"] / "pseudo_slides.json").read_text())
    return {s["slide_id"]: s["tumour_fraction"] for s in meta["slides"]}


def survival_labels(cohort, tmp_path, split: bool = True):
    """time/event from each slide's tumour fraction (a known hazard exp(8 f), deterministic), some censored."""
    rows = pd.read_csv(cohort["labels"])
    f = burden(cohort)
    rng = np.random.default_rng(0)
    t = [float(-np.log(rng.uniform()) / (0.05 * np.exp(8 * f[s]))) for s in rows["slide_id"]]
    censor = rng.uniform(0, 60, len(rows))
    out = pd.DataFrame({"slide_id": rows["slide_id"], "patient_id": rows["patient_id"],
                        "time": np.round(np.minimum(t, censor), 3), "event": (np.array(t) <= censor).astype(int)})
    if split:
        out["split"] = rows["split"]
    path = tmp_path / ("surv_split.csv" if split else "surv_cv.csv")
    out.to_csv(path, index=False)
    return path


# -- labels ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("slide_id,patient_id,time,event\na,p1,12,1\nb,p2,-3,0\nc,p3,-1,1\n", "rows 3, 4 have negative time (-3)"),
    ("slide_id,patient_id,time,event\na,p1,12,1\nb,p2,3,yes\n", "row 3 has event 'yes', not 0 or 1"),
    ("slide_id,patient_id,time,event\na,p1,12,2\nb,p2,3,1\n", "row 2 has event '2', not 0 or 1"),
    ("slide_id,patient_id,time,event\na,p1,,1\nb,p2,3,1\nc,p3,NA,0\n", "rows 2, 4 have no time (missing value)"),
    ("slide_id,patient_id,time,event\na,p1,4,1\nb,p2,3,\n", "row 3 has no event (missing value)"),
    ("slide_id,patient_id,time,event\na,p1,4 months,1\nb,p2,3,1\n", "row 2 has time '4 months', not a number"),
    ("slide_id,patient_id,time,event\na,p1,4,0\nb,p2,3,0\n", "no slide has an event"),
    ("slide_id,patient_id,time\na,p1,4\nb,p2,3\n", "no event column"),
])
def test_bad_survival_labels_name_the_rows(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(LabelsError) as err:
        read_labels(path, available=["a", "b", "c"], task="survival")
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_survival_labels_read_and_task_hint(tmp_path):
    path = _write(tmp_path, "slide_id,patient_id,time,event,label\na,p1,12.5,1,\nb,p2,0,0,x\nc,p3,7,1.0,\n")
    table = read_labels(path, task="survival")
    assert table.task == "survival" and table.classes is None
    assert table.times.tolist() == [12.5, 0.0, 7.0] and table.events.tolist() == [1, 0, 1]
    bare = _write(tmp_path, "slide_id,patient_id,time,event\na,p1,1,1\nb,p2,2,0\n", "bare.csv")
    with pytest.raises(LabelsError, match="no label column .*pass --task survival"):
        read_labels(bare)


def test_cv_folds_are_patient_level_and_stratified_by_event(tmp_path):
    rng = np.random.default_rng(1)
    rows = ["slide_id,patient_id,time,event"]
    for p in range(30):
        event = int(p % 3 != 0)  # 20 events, 10 censored
        for k in range(int(rng.integers(1, 3))):
            rows.append(f"s{p}_{k},pat{p},{rng.uniform(1, 50):.2f},{event}")
    table = read_labels(_write(tmp_path, "\n".join(rows) + "\n"), task="survival")
    folds = make_folds(table, folds=5, seed=0)
    patients = np.asarray(table.patient_ids)
    for f in folds:
        assert not set(patients[f.test]) & (set(patients[f.train]) | set(patients[f.val]))
        share = table.events[f.test].mean()
        assert 0.4 <= share <= 0.9, share  # every test fold has events and censored slides, about 2:1
        assert 0 < table.events[f.test].sum() < len(f.test)
    few = _write(tmp_path, "slide_id,patient_id,time,event\n" + "".join(f"s{i},p{i},{i + 1},{int(i < 2)}\n" for i in range(10)),
                 "few.csv")
    with pytest.raises(LabelsError, match="2 patient\\(s\\) have an event, fewer than the 3 folds"):
        make_folds(read_labels(few, task="survival"), folds=3)


# -- losses and metrics -----------------------------------------------------------------------------------


def test_discrete_nll_equals_the_brute_force_likelihood():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    bins = torch.tensor([0, 1, 3, 2, 0, 3])
    event = torch.tensor([1, 0, 1, 0, 0, 1])
    h = torch.sigmoid(logits).double()
    total = 0.0
    for i in range(6):
        k = int(bins[i])
        survived = float(torch.prod(1 - h[i, :k]))  # through the bins before k
        lik = survived * float(h[i, k]) if event[i] else survived * float(1 - h[i, k])
        total -= math.log(lik)
    assert float(discrete_nll(logits, bins, event)) == pytest.approx(total / 6, rel=1e-5)


def _comparable(time, event, i, j) -> bool:
    """j outlived i's event: a later time, or the same time censored (the convention of scikit-survival
    and lifelines)."""
    return time[j] > time[i] or (time[j] == time[i] and not event[j])


def _brute_harrell(time, event, risk):
    conc = ties = pairs = 0.0
    for i in range(len(time)):
        if not event[i]:
            continue
        for j in range(len(time)):
            if _comparable(time, event, i, j):
                pairs += 1
                conc += risk[i] > risk[j]
                ties += risk[i] == risk[j]
    return (conc + 0.5 * ties) / pairs


def _brute_uno(time, event, risk, tau):
    """Uno's C: comparable pairs with i's event before ``tau`` weighted by 1 / G(t_i)^2, G the Kaplan-Meier
    estimate of the censoring distribution (at a tied time the events leave the risk set first)."""
    g, g_at = 1.0, {}
    for t in np.unique(time):
        at_risk = np.sum(time >= t) - np.sum((time == t) & (event == 1))
        censored = np.sum((time == t) & (event == 0))
        g *= 1 - censored / at_risk if at_risk else 1.0
        g_at[t] = g
    num = den = 0.0
    for i in range(len(time)):
        if not event[i] or time[i] >= tau:
            continue
        w = 1 / g_at[time[i]] ** 2
        for j in range(len(time)):
            if _comparable(time, event, i, j):
                den += w
                num += w * ((risk[i] > risk[j]) + 0.5 * (risk[i] == risk[j]))
    return num / den


def test_concordance_equals_independent_computations():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from torchsurv.metrics.cindex import ConcordanceIndex

    rng = np.random.default_rng(3)
    n = 60
    risk = rng.normal(size=n)
    time = np.round(rng.exponential(10 * np.exp(-risk)), 1)  # rounded: tied times occur
    event = (rng.uniform(size=n) < 0.7).astype(int)
    risk[:5] = risk[5]  # tied predictions
    m = survival_metrics(np.column_stack([time, event]), risk, ())
    assert m["c_index"] == pytest.approx(_brute_harrell(time, event, risk), abs=1e-12)
    ts = ConcordanceIndex()(torch.tensor(risk), torch.tensor(event).bool(), torch.tensor(time, dtype=torch.float64))
    assert m["c_index"] == pytest.approx(float(ts), abs=1e-6)
    tau = float(time[event == 1].max())
    assert m["uno_c"] == pytest.approx(_brute_uno(time, event, risk, tau), abs=1e-9)
    assert m["c_index"] != pytest.approx(_brute_harrell(time, event, -risk), abs=1e-3)  # the test can fail


# -- training on real-tile features ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank_and_table(mil_cohort, tmp_path_factory):
    from pathweak.features.bank import load_feature_bank

    table = read_labels(survival_labels(mil_cohort, tmp_path_factory.mktemp("surv")), task="survival")
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", dtype="float32",
                             progress=False)
    return bank, table


@pytest.mark.parametrize("loss", ["cox", "discrete"])
@pytest.mark.parametrize("head", SLIDE_HEADS)
def test_a_few_steps_reduce_the_survival_loss(bank_and_table, head, loss):
    from pathweak.heads import create_head
    from pathweak.train.fit import survival_edges, training_targets
    from pathweak.train.module import MILModule

    bank, table = bank_and_table
    rows = np.arange(len(table))
    cfg = TrainConfig(head=head, task="survival", survival_loss=loss, survival_bins=3)
    edges = survival_edges(table, rows, cfg)
    y, _ = training_targets(table, rows, edges)
    torch.manual_seed(0)
    module = MILModule(create_head(head, bank.embed_dim, 1 if loss == "cox" else 3, dropout=0.0), "survival",
                       survival_loss=loss)
    opt = torch.optim.Adam(module.head.parameters(), lr=2e-3)

    def step() -> torch.Tensor:
        return module.set_loss([module.streams(module.head(bank.bag(int(i)).float(), bank.grid(int(i)))) for i in rows], y)

    module.head.eval()  # no dropout: the loss is a deterministic function of the weights
    with torch.no_grad():
        before = float(step())
    for _ in range(15):
        opt.zero_grad()
        step().backward()
        opt.step()
    with torch.no_grad():
        after = float(step())
    assert after < before * 0.97, (before, after)


def test_ins_is_refused_for_survival_with_the_fix(mil_cohort, tmp_path):
    from pathweak.errors import ConfigError

    labels = survival_labels(mil_cohort, tmp_path)
    with pytest.raises(ConfigError, match="the ins head learns from class pseudo-labels: it cannot train a survival task"):
        train_cohort([mil_cohort["features"]], labels, tmp_path / "ins",
                     TrainConfig(head="ins", task="survival", survival_loss="discrete", seeds=(0,), max_epochs=1,
                                 min_epochs=0, bootstrap=0, device="cpu"), progress=False)
    assert not (tmp_path / "ins").exists() and not list(tmp_path.glob(".ins*"))


@pytest.fixture(scope="module")
def survival_run(mil_cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("survrun")
    cfg = TrainConfig(head="abmil", task="survival", seeds=(0,), max_epochs=4, min_epochs=1, patience=3, lr=1e-3,
                      bootstrap=50, device="cpu", eval_times=(2.0, 5.0))
    return train_cohort([mil_cohort["features"]], survival_labels(mil_cohort, tmp), tmp / "run", cfg, progress=False)


def test_survival_run_writes_risk_metrics_and_cis(survival_run, mil_cohort):
    s = survival_run.summary
    assert s["task"] == "survival" and s["classes"] is None
    assert {"c_index", "uno_c"} <= set(s["metrics"]) and s["survival"]["eval_times"] == [2.0, 5.0]
    assert s["survival"]["bags_per_step"] == 16 and s["labels"]["class_counts"]["event"] > 0
    lo, hi = s["seeds"]["0"]["ci95"]["c_index"]
    assert 0 <= lo <= s["seeds"]["0"]["metrics"]["c_index"] <= hi <= 1
    pred = pd.read_csv(survival_run.out_dir / "predictions.csv")
    assert list(pred.columns) == ["slide_id", "patient_id", "seed", "fold", "model", "risk", "time", "event"]
    y = pred[["time", "event"]].to_numpy()
    assert s["seeds"]["0"]["metrics"]["c_index"] == pytest.approx(_brute_harrell(y[:, 0], y[:, 1], pred["risk"].to_numpy()))
    assert s["seeds"]["0"]["folds"][0]["history"]  # per-epoch losses for the report


def test_predict_writes_a_risk_per_slide_and_per_tile(survival_run, mil_cohort, tmp_path):
    from pathweak.heatmap import load_scores

    results = predict_slides(survival_run.out_dir, [mil_cohort["features"]], tmp_path, progress=False)
    assert len(results) == 12 and all(set(r.slide_scores) == {"risk"} and r.predicted is None for r in results)
    table = pd.read_csv(Path(results[0].results).parent / "predictions.csv")
    assert list(table.columns) == ["slide_id", "model", "risk"] and table["risk"].notna().all()
    cv = pd.read_csv(survival_run.out_dir / "predictions.csv").set_index("slide_id")
    by_id = {r.slide_id: r for r in results}
    for sid, row in cv.iterrows():  # one model: the results' risk is the run's test prediction
        assert by_id[sid].slide_scores["risk"] == pytest.approx(row["risk"], rel=1e-4, abs=1e-5)
    ts = load_scores(results[0].results)
    assert {"risk", "attention"} <= set(ts.scores) and len(ts.scores["risk"]) == len(ts.coords)


def test_cli_survival_bad_labels_exit_2_one_line(mil_cohort, tmp_path):
    labels = _write(tmp_path, "slide_id,patient_id,time,event\ntrain_000,p1,-2,1\ntrain_001,p2,3,1\n")
    result = runner.invoke(app, ["train", str(mil_cohort["features"]), "--labels", str(labels),
                                 "--task", "survival", "-o", str(tmp_path / "run"), "--no-progress"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "row 2 has a negative time (-2)" in lines[0]
    assert not (tmp_path / "run").exists()
