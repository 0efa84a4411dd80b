"""Instance-level heads on a real-tile cohort (LC25000 pseudo-slides with tile-level ground truth): INS's
pseudo-labels of negative bags stay negative and its tumour prototype moves towards the tumour tiles;
the weakly supervised segmentation map has the slide grid's geometry; both heads package, reload and
predict identically, prediction writes their per-tile scores into the results stores, and the mask's
polygons lie in tissue. (That their training loss falls is tests/heads/test_mil_heads.py, over every head.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import reloaded_and_live

from pathweak.features.bank import load_feature_bank
from pathweak.heads import create_head
from pathweak.heads.base import foreground_mask, otsu_level
from pathweak.train import TrainConfig, load_model, predict_slides, read_labels, train_cohort
from pathweak.train.module import make_criterion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(mil_cohort):
    table = read_labels(mil_cohort["labels"])
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    gt = pd.read_csv(mil_cohort["ground_truth"])
    truth = {}
    for i, sid in enumerate(table.slide_ids):
        cells = gt[gt.slide_id == sid].set_index(["x", "y"])["tumour"]
        truth[i] = np.array([cells[(int(x), int(y))] for x, y in bank.coords(i)], bool)
    train = [i for i, s in enumerate(table.split) if s == "train"]
    return table, bank, truth, train


def _train_ins(table, bank, train, epochs, seed=0, **options):
    torch.manual_seed(seed)
    head = create_head("ins", bank.embed_dim, 2, **options).train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    criterion = make_criterion("binary")
    targets = torch.as_tensor(table.targets)
    seen = []
    for epoch in range(epochs):
        for i in np.random.default_rng(epoch).permutation(train):
            y = targets[i]
            out = head(bank.bag(int(i)).float(), bank.grid(int(i)), y, bag_id=int(i))
            loss = head.loss(out, y, criterion)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen.append((int(i), int(y), out.aux["pseudo_targets"].detach().clone()))
    return head, seen


def _prototype_margin(head, bank, truth, rows):
    """Cosine similarity of the tumour prototype to tumour tiles minus to benign tiles (positive slides)."""
    head.eval()
    sims_t, sims_b = [], []
    with torch.no_grad():
        for i in rows:
            q = torch.nn.functional.normalize(head.proj(head.fc(bank.bag(i).float())), dim=1)
            s = (q @ head.prototypes[1]).numpy()
            sims_t.append(s[truth[i]])
            sims_b.append(s[~truth[i]])
    head.train()
    return float(np.concatenate(sims_t).mean() - np.concatenate(sims_b).mean())


def test_ins_pseudo_labels_of_negative_bags_are_always_negative(cohort):
    table, bank, _, train = cohort
    _, seen = _train_ins(table, bank, train, epochs=3, elr=1.0)  # early-learning regularisation on as well
    negatives = [s for s in seen if s[1] == 0]
    positives = [s for s in seen if s[1] == 1]
    assert negatives and positives
    for _, _, soft in negatives:
        assert torch.equal(soft, torch.tensor([[1.0, 0.0]]).expand_as(soft))
    for _, _, soft in positives:  # positive bags: soft targets over the two candidates
        assert torch.allclose(soft.sum(1), torch.ones(len(soft))) and (soft >= 0).all()


def test_ins_prototype_moves_towards_tumour_tiles(cohort):
    table, bank, truth, train = cohort
    pos_train = [i for i in train if truth[i].any()]
    head, _ = _train_ins(table, bank, train, epochs=1)
    early = _prototype_margin(head, bank, truth, pos_train)
    head, seen = _train_ins(table, bank, train, epochs=10)
    late = _prototype_margin(head, bank, truth, pos_train)
    assert late > early and late > 0.1, (early, late)
    # the smoothed pseudo-targets of positive bags agree with the ground truth better than chance
    last = {i: soft for i, y, soft in seen[-len(train):] if y == 1}
    pred = np.concatenate([last[i][:, 1].numpy() > 0.5 for i in last])
    gt = np.concatenate([truth[i] for i in last])
    assert (pred == gt).mean() > 0.8 and pred[gt].mean() > 0.5, ((pred == gt).mean(), pred[gt].mean())


def test_wsseg_map_has_the_slide_grid_geometry(cohort, mil_cohort):
    table, bank, _, _ = cohort
    meta = {s["slide_id"]: s for s in json.loads((mil_cohort["root"] / "pseudo_slides.json").read_text())["slides"]}
    torch.manual_seed(0)
    head = create_head("wsseg", bank.embed_dim, 2).eval()
    for i in (0, 5):
        x, grid = bank.bag(i).float(), bank.grid(i)
        with torch.no_grad():
            cam, tissue, origin = head.segmentation_map(x, grid)
            out = head(x, grid)
        assert cam.shape == (2, *meta[table.slide_ids[i]]["grid"]) and tissue.all() and origin.tolist() == [0, 0]
        rc = grid.long()
        assert torch.equal(cam[:, rc[:, 0], rc[:, 1]].T, out.instance_logits)
        # tiles moved on the grid carry their scores with them; a hole is empty tissue
        keep = torch.arange(len(x)) != 3
        with torch.no_grad():
            _, holes, _ = head.segmentation_map(x[keep], grid[keep])
        assert holes.sum() == len(x) - 1 and not holes[rc[3, 0], rc[3, 1]]
        assert set(out.tile_scores) == {"mask"} and set(out.tile_scores["mask"].unique().tolist()) <= {0.0, 1.0}


def test_otsu_level_matches_opencv():
    import cv2

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(60, 10, 500), rng.normal(180, 20, 300)]).clip(0, 255).astype(np.uint8)
    level, _ = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ours = otsu_level(torch.as_tensor(v, dtype=torch.float32), bins=256)
    assert abs(ours - level) <= 2, (ours, level)
    prob = torch.tensor([0.1, 0.15, 0.2, 0.7, 0.8])
    assert foreground_mask(prob, True, "otsu").tolist() == [0, 0, 0, 1, 1]
    assert foreground_mask(prob, False, "otsu").tolist() == [0, 0, 0, 1, 1]
    assert foreground_mask(prob, True, 0.75).tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("head", ["ins", "wsseg"])
def test_instance_heads_reload_identically_and_write_their_scores(mil_cohort, tmp_path, head):
    from pathweak.heatmap import load_scores

    cfg = TrainConfig(head=head, seeds=(0,), max_epochs=3, min_epochs=1, patience=2, lr=1e-3, bootstrap=0, device="cpu")
    run = train_cohort([mil_cohort["features"]], mil_cohort["labels"], tmp_path / head, cfg, progress=False)
    fit = run.fits[0]
    model = load_model(tmp_path / head / "models" / "seed0_fold0")
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    expected = {"ins": {"pseudo_label", "mask"}, "wsseg": {"mask"}}[head]
    for i in range(len(bank)):
        a, out = reloaded_and_live(model, fit.head, bank, i)
        assert np.array_equal(a.slide, torch.softmax(out.logits, -1).numpy())
        assert np.array_equal(a.instance, torch.softmax(out.instance_logits, -1).numpy())
        assert set(a.extra) == expected
        for k in expected:
            assert np.array_equal(a.extra[k], out.tile_scores[k].numpy())
    (r,) = predict_slides(tmp_path / head / "models" / "seed0_fold0", [mil_cohort["features"] / "test_002.zarr"],
                          out_dir=tmp_path, progress=False)
    ts = load_scores(r.results)
    assert set(ts.scores) == {"prob_normal", "prob_tumour"} | expected
    assert np.array_equal(ts.scores["mask"], model.predict(bank.bag(bank.index("test_002")),
                                                           bank.grid(bank.index("test_002"))).extra["mask"])
    _mask_polygons_lie_in_tissue(ts)


def _mask_polygons_lie_in_tissue(ts):
    """The mask as QuPath annotation polygons (the heatmap exporter's regions) lies in the slide's tissue."""
    import shapely

    from pathweak.heatmap.regions import Region, region_polygons
    from pathweak.tissue.mask import TissueMask

    polygons, owners = region_polygons(ts, Region("mask", 0.5, "Tumour"))
    assert sorted(owners[:, 1].tolist()) == np.nonzero(ts.scores["mask"] >= 0.5)[0].tolist()
    mask = ts.store.tissue_mask.astype(bool)
    down = (ts.slide_size[0] / mask.shape[1], ts.slide_size[1] / mask.shape[0])
    tissue = shapely.union_all(TissueMask(mask, down, "stored").polygons).buffer(2 * max(down))
    assert polygons and all(p.within(tissue) for p in polygons)
