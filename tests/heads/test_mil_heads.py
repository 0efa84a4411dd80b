"""Every registered head on a real-tile cohort: its outputs have the documented shapes, and a few
optimiser steps on the training slides lower its own training loss (classification and regression)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pathweak.features.bank import load_feature_bank
from pathweak.heads import HEADS, HeadOutput, create_head
from pathweak.heads.transmil import NystromAttention
from pathweak.train.labels import read_labels
from pathweak.train.module import make_criterion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(mil_cohort):
    table = read_labels(mil_cohort["labels"])
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    train = [i for i, s in enumerate(table.split) if s == "train"]
    return table, bank, train


def _epoch_losses(head, bank, rows, targets, criterion, epochs=12, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    means = []
    for _ in range(epochs):
        head.train()
        losses = []
        for i in rows:
            y = targets[i]
            loss = head.loss(head(bank.bag(i).float(), bank.grid(i), y), y, criterion)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        means.append(float(np.mean(losses)))
    return means


@pytest.mark.parametrize("name", list(HEADS))
def test_head_loss_falls_on_real_tiles(cohort, name):
    table, bank, train = cohort
    torch.manual_seed(0)
    head = create_head(name, bank.embed_dim, 2)
    targets = torch.as_tensor(table.targets)
    losses = _epoch_losses(head, bank, train, targets, make_criterion("binary"))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses

    head.eval()
    x, grid = bank.bag(0).float(), bank.grid(0)
    out = head(x, grid)
    assert isinstance(out, HeadOutput)
    assert out.logits.shape == (2,) and out.instance_logits.shape == (x.shape[0], 2)
    if out.attention is not None:
        assert out.attention.shape[0] == x.shape[0] and out.attention.shape[1] in (1, 2)
        assert torch.allclose(out.attention.sum(0), torch.ones(out.attention.shape[1]), atol=1e-4)


@pytest.mark.parametrize("name", ["abmil", "clam_sb", "transmil", "dsmil"])
def test_head_regresses_the_tumour_fraction(cohort, mil_cohort, name):
    """A continuous slide target (the share of tumour tiles, like a TIL percentage): the MSE falls."""
    import pandas as pd

    table, bank, train = cohort
    gt = pd.read_csv(mil_cohort["ground_truth"]).groupby("slide_id")["tumour"].mean()
    frac = torch.tensor([gt[s] for s in table.slide_ids], dtype=torch.float32)
    target = (frac - frac.mean()) / frac.std()
    torch.manual_seed(0)
    head = create_head(name, bank.embed_dim, 1)
    losses = _epoch_losses(head, bank, train, target, make_criterion("regression"))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses
    out = head.eval()(bank.bag(0).float(), bank.grid(0))
    assert out.logits.shape == (1,) and out.instance_logits.shape == (bank.bag_size(0), 1)


def test_clam_instance_loss_is_part_of_training(cohort):
    table, bank, _ = cohort
    head = create_head("clam_sb", bank.embed_dim, 2, k_sample=4).train()
    y = torch.tensor(1)
    out = head(bank.bag(0).float(), bank.grid(0), y)
    assert out.aux["instance_loss"] > 0
    ce = make_criterion("binary")
    assert torch.isclose(head.loss(out, y, ce), 0.7 * ce(out.logits[None], y.view(1)) + 0.3 * out.aux["instance_loss"])
    assert "instance_loss" not in head.eval()(bank.bag(0).float(), bank.grid(0), y).aux  # training only


def test_transmil_uses_the_slide_grid_or_the_square(cohort):
    _, bank, _ = cohort
    torch.manual_seed(0)
    head = create_head("transmil", bank.embed_dim, 2).eval()
    x, grid = bank.bag(0).float(), bank.grid(0)
    on_grid = head(x, grid).logits
    shuffled = torch.randperm(x.shape[0])
    # on the slide grid, the order of the tiles does not matter (positions come from the grid) ...
    assert torch.allclose(head(x[shuffled], grid[shuffled]).logits, on_grid, atol=1e-5)
    # ... in the original square layout it does
    assert not torch.allclose(head(x[shuffled]).logits, head(x).logits, atol=1e-5)


@torch.no_grad()
def test_nystrom_attention_matches_exact_attention_when_it_can():
    torch.manual_seed(0)
    attn = NystromAttention(64, heads=4, landmarks=64, dropout=0.0).eval()
    x = torch.randn(1, 48, 64)
    out, row = attn(x, query_index=0)
    q, k, v = attn.to_qkv(x).chunk(3, dim=-1)
    split = lambda t: t.reshape(1, 48, 4, 16).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    exact = torch.softmax(q @ k.transpose(-1, -2) * 16**-0.5, dim=-1)
    ref = attn.to_out((exact @ v + attn.res_conv(v)).transpose(1, 2).reshape(1, 48, 64))
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(row[0], exact[0, :, 0].mean(0), atol=1e-6)
    # with fewer landmarks than tokens it approximates, better with more landmarks
    errors = []
    for m in (4, 12, 24):
        few = NystromAttention(64, heads=4, landmarks=m, dropout=0.0).eval()
        few.load_state_dict(attn.state_dict())
        approx, _ = few(x, query_index=0)
        errors.append(float((approx - out).norm() / out.norm()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.08, errors
