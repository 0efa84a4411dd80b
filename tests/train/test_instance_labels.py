"""Training on a reviewer's corrections (train/instance_labels.py): the corrected tiles' cross-entropy is added
to their bag's loss with its weight, INS takes them over its pseudo-labels, the label table keeps them
through row removals, and a fit trained on them scores the corrected tiles as corrected."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pathweak.heads import create_head
from pathweak.train import TrainConfig, fit_head, make_folds, read_labels
from pathweak.train.instance_labels import Corrections, SlideCorrections, attach_instance_labels
from pathweak.train.module import Bag, MILModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bag(n=12, label=1, instance=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    grid = torch.stack([torch.arange(n) // 4, torch.arange(n) % 4], 1).int()
    return Bag(x, grid, torch.tensor(label), 0, label, None, instance)


@pytest.mark.parametrize("head", ["abmil", "clam_sb", "dsmil", "transmil", "wsseg", "max"])
def test_the_instance_loss_is_added_with_its_weight(head):
    torch.manual_seed(0)
    model = create_head(head, 8, 2, dropout=0.0, **({"k_sample": 2} if head == "clam_sb" else {}))
    rows, classes = torch.tensor([1, 4, 7]), torch.tensor([1, 0, 1])
    for weight in (0.0, 2.5):
        module = MILModule(model, "binary", instance_weight=weight)
        module.train()
        torch.manual_seed(1)
        plain = module.bag_loss(_bag())
        torch.manual_seed(1)
        with_labels = module.bag_loss(_bag(instance=(rows, classes)))
        torch.manual_seed(1)
        out = module.forward_bag(_bag())
        expected = F.cross_entropy(out.instance_logits[rows].float(), classes)
        assert torch.allclose(with_labels, plain + weight * expected, atol=1e-5), head


def test_ins_takes_corrections_over_its_pseudo_labels():
    torch.manual_seed(0)
    ins = create_head("ins", 8, 2, dropout=0.0, feature_drop=0.0, queue_size=64)
    ins.train()
    bag = _bag(label=0)  # a negative bag: every pseudo-target is the negative class ...
    out = ins(bag.x, bag.grid, bag.label, bag_id=0)
    assert torch.equal(out.aux["pseudo_targets"][:, 0], torch.ones(12))
    rows, classes = torch.tensor([2, 5]), torch.tensor([1, 1])  # ... except where a reviewer says otherwise
    out = ins(bag.x, bag.grid, bag.label, bag_id=0, instance_labels=(rows, classes))
    targets = out.aux["pseudo_targets"]
    assert torch.equal(targets[rows], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(targets[[0, 1, 3]], torch.tensor([[1.0, 0.0]] * 3))
    # in a positive bag the corrected tiles' soft targets are the corrections, and stay so in the head's state
    pos = _bag(label=1)
    out = ins(pos.x, pos.grid, pos.label, bag_id=1, instance_labels=(torch.tensor([0, 3]), torch.tensor([0, 1])))
    assert torch.equal(out.aux["pseudo_targets"][[0, 3]], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(ins._targets[1][[0, 3]], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_the_module_passes_corrections_to_heads_that_take_them():
    torch.manual_seed(0)
    ins = create_head("ins", 8, 2, dropout=0.0, feature_drop=0.0, queue_size=64)
    module = MILModule(ins, "binary")
    module.train()
    out = module.forward_bag(_bag(label=0, instance=(torch.tensor([3]), torch.tensor([1]))))
    assert torch.equal(out.aux["pseudo_targets"][3], torch.tensor([0.0, 1.0]))


def test_removing_rows_keeps_each_slides_corrections(mil_cohort):
    table = read_labels(mil_cohort["labels"])
    table.instance_labels = {1: (np.array([0]), np.array([1])), 5: (np.array([2, 3]), np.array([0, 1]))}
    kept = table.without({table.slide_ids[0], table.slide_ids[4]})
    assert kept.slide_ids == table.slide_ids[1:4] + table.slide_ids[5:]
    assert set(kept.instance_labels) == {0, 3}
    assert kept.instance_labels[3][0].tolist() == [2, 3]


def test_a_fit_on_corrections_scores_the_corrected_tiles_as_corrected(mil_cohort):
    """Tumour tiles of the training slides, corrected to tumour with a strong weight: the fit's per-tile tumour
    probability of those tiles rises above the weak fit's (same seed, same data, same epochs)."""
    import pandas as pd

    from pathweak.features.bank import load_feature_bank
    from pathweak.train import predict_bag

    table = read_labels(mil_cohort["labels"])
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    cfg = TrainConfig(head="abmil", max_epochs=4, min_epochs=4, patience=4, lr=1e-3, device="cpu", instance_weight=5.0)
    fold = make_folds(table, cfg.folds, cfg.split_seed, cfg.val_fraction)[0]
    truth = pd.read_csv(mil_cohort["ground_truth"])
    slides = {}
    for i in fold.train:
        sid = table.slide_ids[i]
        coords = bank.coords(int(i))
        tumour = set(map(tuple, truth[(truth.slide_id == sid) & (truth.tumour == 1)][["x", "y"]].to_numpy()))
        rows = [j for j, (x, y) in enumerate(coords) if (x, y) in tumour]
        if rows:
            slides[sid] = SlideCorrections(np.array(rows), ["tumour"] * len(rows))
    assert slides
    corrected = replace(table, warnings=[])
    attach_instance_labels(corrected, Corrections(slides), 0, "slide")
    probs = {}
    for name, t in (("weak", table), ("corrected", corrected)):
        head = fit_head(bank, t, fold, cfg, seed=0).head
        probs[name] = np.concatenate([
            predict_bag(head, bank.bag(table.slide_ids.index(s)), bank.grid(table.slide_ids.index(s)), "binary").instance[sc.rows, 1]
            for s, sc in slides.items()])
    assert probs["corrected"].mean() > probs["weak"].mean() + 0.05, probs
