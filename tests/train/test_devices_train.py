"""Head training with Lightning DDP (pathweak/ddp.py): 2 gloo processes on the CPU follow the loss curve of one
process seeing the same bags per step; what DDP refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LC25000, need_shared

from pathweak.errors import ConfigError
from pathweak.features.bank import load_feature_bank
from pathweak.train import TrainConfig, read_labels
from pathweak.train.fit import fit_head
from pathweak.train.module import RankSampler
from pathweak.train.splits import Fold

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(mil_cohort):
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    table = read_labels(mil_cohort["labels"], list(bank.slide_ids))
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    split = np.asarray(table.split)
    train, test = np.nonzero(split == "train")[0], np.nonzero(split == "test")[0]
    return bank, table, Fold(0, train[:6], test, np.array([], np.int64))  # 6 bags: 3 steps of 2


def cfg(**kw):
    return TrainConfig(head="abmil", head_options={"dropout": 0.0}, max_epochs=4, min_epochs=4, patience=10,
                       lr=1e-3, bootstrap=0, device="cpu", **kw)


def test_two_gloo_processes_follow_the_loss_curve_of_one(cohort):
    bank, table, fold = cohort
    one = fit_head(bank, table, fold, cfg(bags_per_step=2, devices=1), seed=0)
    two = fit_head(bank, table, fold, cfg(bags_per_step=1, devices=2), seed=0)
    assert len(one.history) == len(two.history) == 4
    a = np.array([[h["train_loss"], h["val_loss"]] for h in one.history])
    b = np.array([[h["train_loss"], h["val_loss"]] for h in two.history])
    assert np.all(np.isfinite(a)) and a[-1, 0] < a[0, 0]  # it learns
    assert np.allclose(a, b, atol=1e-4, rtol=1e-4), (a, b)
    assert two.best_epoch == one.best_epoch and two.epochs == one.epochs
    for (k, v), w in zip(one.head.state_dict().items(), two.head.state_dict().values(), strict=True):
        assert torch.allclose(v, w, atol=1e-4), k
    assert not two.head.training and next(two.head.parameters()).device == bank.device


def test_rank_sampler_splits_one_order_between_ranks():
    s = RankSampler(7, seed=3)
    order = list(s)
    assert sorted(order) == list(range(7)) and len(s) == 7
    assert list(s) != order  # a new order each epoch
    # the order of a shuffling DataLoader seeded the same way (single-device runs keep their bag order)
    loader = torch.utils.data.DataLoader(list(range(7)), batch_size=1, shuffle=True, collate_fn=list,
                                         generator=torch.Generator().manual_seed(3))
    again = RankSampler(7, seed=3)
    for _ in range(3):
        assert [b[0] for b in loader] == list(again)


def test_ddp_refuses_what_it_cannot_train(cohort, mil_cohort):
    bank, table, fold = cohort
    with pytest.raises(ConfigError, match="per-tile state"):
        fit_head(bank, table, fold, TrainConfig(head="ins", devices=2, device="cpu"), seed=0)
    streamed = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", stream=True,
                                 progress=False)
    with pytest.raises(ConfigError, match="resident"):
        fit_head(streamed, table, fold, cfg(devices=2), seed=0)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_follow_the_loss_curve_of_one(mil_cohort):
    bank = load_feature_bank([mil_cohort["features"]], device="cuda", progress=False)
    table = read_labels(mil_cohort["labels"], list(bank.slide_ids))
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cuda", progress=False)
    train = np.nonzero(np.asarray(table.split) == "train")[0][:6]
    fold = Fold(0, train, np.nonzero(np.asarray(table.split) == "test")[0], np.array([], np.int64))
    kw = {"head": "abmil", "head_options": {"dropout": 0.0}, "max_epochs": 3, "min_epochs": 3, "bootstrap": 0,
          "device": "cuda", "precision": "32-true"}
    one = fit_head(bank, table, fold, TrainConfig(bags_per_step=2, **kw), seed=0)
    two = fit_head(bank, table, fold, TrainConfig(bags_per_step=1, devices=2, **kw), seed=0)
    a = np.array([h["train_loss"] for h in one.history])
    b = np.array([h["train_loss"] for h in two.history])
    assert np.allclose(a, b, atol=1e-3)


@pytest.fixture(scope="module")
def ssl_store(tmp_path_factory):
    need_shared(LC25000)
    from pathweak.tiling.images import images_to_store, list_images

    out = tmp_path_factory.mktemp("ssl")
    return images_to_store(list_images(LC25000)[::60][:48], out / "lc.zarr", 64, progress=False).path


def tiny_dino(**kw):
    from pathweak.ssl import SSLConfig

    kw = {"max_epochs": 1, **kw}
    return SSLConfig.tiny("dino", depth=2, img_size=64, local_size=32, batch_size=8, rankme_samples=16, num_workers=0,
                          samples_per_epoch=32, warmup_steps=2, **kw)


def test_pretraining_on_two_gloo_processes_runs_the_schedule_of_one(ssl_store, tmp_path):
    """DINO pretraining through --devices 2 on the CPU: each rank takes half of each epoch's samples, and the
    LR and teacher-momentum schedules still run to their end (as on one process); the LR scales with the
    batch of both ranks; RankMe is measured on every held-out tile, not a rank's half; the ranks end with the
    same weights; rank 0 exports the encoder."""
    from dataclasses import replace

    from pathweak.encoders import create_encoder
    from pathweak.ssl import pretrain

    cfg = tiny_dino(devices=2)
    one = pretrain([ssl_store], tmp_path / "one", replace(cfg, devices=1), progress=False)
    two = pretrain([ssl_store], tmp_path / "two", cfg, progress=False)
    assert one.steps == 4 and two.steps == 2  # 32 samples of 8: 4 steps on one process, 2 per rank on two
    for run in (one, two):
        assert run.schedule["progress"] == 1.0 and run.schedule["teacher_momentum"] == 1.0, run.schedule
    assert two.schedule["base_lr"] == pytest.approx(2 * one.schedule["base_lr"])
    held_out = min(16, 48 // 5)  # rankme_samples, at most a fifth of the 48 tiles
    assert [r["tiles"] for r in two.rankme] == [r["tiles"] for r in one.rankme] == [held_out]
    assert two.ranks_agree is True and one.ranks_agree is None
    enc = create_encoder(f"pathweak:{tmp_path / 'two'}")
    assert enc.embed(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)).shape == (2, 192)


def test_time_budgeted_pretraining_keeps_two_ranks_on_one_schedule(ssl_store, tmp_path):
    """Under a max_minutes budget the schedules follow elapsed time: rank 0's clock, so both ranks use the
    same LR and teacher momentum at every step and end with the same weights."""
    from pathweak.ssl import pretrain

    two = pretrain([ssl_store], tmp_path / "two", tiny_dino(devices=2, max_epochs=1000, max_minutes=0.05),
                   progress=False)
    assert two.steps > 2 and two.schedule["progress"] > two.schedule["step"] / two.schedule["total_steps"]
    assert two.ranks_agree is True


def test_cli_discrete_survival_on_two_processes_predicts_like_one(mil_cohort, tmp_path, monkeypatch):
    """`pathweak train --devices 2 --device cpu --task survival --survival-loss discrete` completes (the parent
    rebuilds the head with one output per time bin, as the ranks trained it), model.json keeps the time bins,
    the packaged model predicts what the one-process model (2 bags per step) predicts, and both seeds train
    in one process world (not one world per seed and fold)."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from pathweak import ddp
    from pathweak.train.package import load_model
    from pathweak_cli.main import app

    worlds = []
    real_run_ranks = ddp.run_ranks
    monkeypatch.setattr(ddp, "run_ranks", lambda *a, **k: worlds.append(a[2]) or real_run_ranks(*a, **k))

    rows = pd.read_csv(mil_cohort["labels"])
    rng = np.random.default_rng(0)
    rows["time"] = np.round(rng.uniform(1, 60, len(rows)), 2)
    rows["event"] = (np.arange(len(rows)) % 3 != 0).astype(int)
    labels = tmp_path / "surv.csv"
    rows.drop(columns=["label"]).to_csv(labels, index=False)
    common = ["train", str(mil_cohort["features"]), "--labels", str(labels), "--task", "survival",
              "--survival-loss", "discrete", "--device", "cpu", "--head-opt", "dropout=0.0", "--epochs", "3",
              "--min-epochs", "3", "--bootstrap", "0", "--no-progress"]
    runs = {}
    for name, extra in (("one", ["--bags-per-step", "2"]), ("two", ["--devices", "2", "--seed", "0", "--seed", "1"])):
        res = CliRunner().invoke(app, [*common, *extra, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        runs[name] = load_model(tmp_path / name / "models" / "seed0_fold0")
    bins = [json.loads((tmp_path / n / "models" / "seed0_fold0" / "model.json").read_text())["training"]["survival"]
            ["time_bins"] for n in runs]
    assert bins[0] and bins[1] == bins[0]  # the run on two processes records its bins (it wrote null)
    assert worlds == [["cpu", "cpu"]] and (tmp_path / "two" / "models" / "seed1_fold0" / "model.json").exists()
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    for i in range(len(bank)):
        a, b = runs["one"].predict(bank.bag(i), bank.grid(i)), runs["two"].predict(bank.bag(i), bank.grid(i))
        assert np.allclose(a.slide, b.slide, atol=1e-4), (i, a.slide, b.slide)
