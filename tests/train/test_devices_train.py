"""Head training with Lightning DDP (train/ddp.py): 2 gloo processes on the CPU follow the loss curve of one
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
    for (k, v), w in zip(one.head.state_dict().items(), two.head.state_dict().values()):
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


@pytest.mark.slow
def test_pretraining_with_two_gloo_processes(tmp_path):
    """DINO pretraining through --devices 2 on the CPU: each rank takes half of each epoch's samples, the
    DINO centre is all-reduced, rank 0 exports the encoder (slow: two processes import Lightning)."""
    from dataclasses import replace

    from pathweak.encoders import create_encoder
    from pathweak.ssl import SSLConfig, pretrain
    from pathweak.tiling.images import images_to_store, list_images

    need_shared(LC25000)
    store = images_to_store(list_images(LC25000)[::60][:48], tmp_path / "lc.zarr", 64, progress=False).path
    cfg = SSLConfig.tiny("dino", depth=2, img_size=64, local_size=32, batch_size=8, rankme_samples=16, num_workers=0,
                         max_epochs=1, samples_per_epoch=32, warmup_steps=2, devices=2)
    one = pretrain([store], tmp_path / "one", replace(cfg, devices=1), progress=False)
    two = pretrain([store], tmp_path / "two", cfg, progress=False)
    assert one.steps == 4 and two.steps == 2  # 32 samples of 8: 4 steps on one process, 2 per rank on two
    assert len(two.rankme) == 1 and np.isfinite(two.rankme[0]["rankme"])
    enc = create_encoder(f"pathweak:{tmp_path / 'two'}")
    assert enc.embed(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)).shape == (2, 192)
