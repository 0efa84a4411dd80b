"""Self-supervised label augmentation (SLA) on a real-tile cohort (LC25000 pseudo-slides): ``extract
--rotations 4`` stores each tile's four rotation views in one FeatureStore; heads train on joint (class x
rotation) labels and aggregate over the rotations at prediction; models package, reload and predict
identically; every bad combination is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reloaded_and_live, run_cli

from pathweak.errors import ConfigError
from pathweak.features import FeatureStore, extract_features
from pathweak.features.bank import load_feature_bank
from pathweak.heads import create_head
from pathweak.tiling import TileStore
from pathweak.train import TrainConfig, load_model, predict_slides, train_cohort

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder():
    from pathweak.encoders import create_encoder

    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=64)


@pytest.fixture(scope="module")
def rot4(mil_cohort, encoder, tmp_path_factory) -> Path:
    """The cohort's tiles as FeatureStores of four rotation views (the mil_cohort features' encoder)."""
    out = tmp_path_factory.mktemp("rot4")
    stores = sorted((mil_cohort["root"] / "tiles").glob("*.zarr"))
    done = extract_features(stores, encoder, out, num_workers=0, progress=False, rotations=4)
    assert all(r.status == "extracted" for r in done), [r.error for r in done]
    return Path(done[0].store).parent


def test_views_are_the_rotated_tiles_features(mil_cohort, rot4, encoder):
    store = FeatureStore.open(rot4 / "train_000.zarr")
    plain = FeatureStore.open(mil_cohort["features"] / "train_000.zarr")
    d = plain.embed_dim
    assert store.embed_dim == 4 * d and rot4.name == f"{plain.encoder_id}-rot4"
    assert store.attrs["views"] == {"kind": "rotation", "count": 4, "angles": [0, 90, 180, 270], "dim": d}
    assert np.array_equal(store.features[:, :d], plain.features)  # view 0: the tile as it is
    with TileStore.open(store.attrs["tile_store"]["path"]) as tiles:
        first = tiles.read_tiles([0, 1])
    for k in range(1, 4):
        rotated = torch.from_numpy(np.ascontiguousarray(np.rot90(first, k, axes=(1, 2))))
        expected = encoder.embed(rotated).to(torch.float16).numpy()
        assert np.array_equal(store.features[:2, k * d : (k + 1) * d], expected), k


def test_aggregated_scores_average_each_views_joint_logit():
    """Class c's logit is the mean over views r of the joint logit (c, r) the head gives view r."""
    torch.manual_seed(0)
    head = create_head("abmil", 4 * 6, 3, label_augmentation={"kind": "rotation", "views": 4}).eval()
    x = torch.randn(7, 24)
    with torch.no_grad():
        out = head(x)
        joint = [head.inner(x[:, 6 * r : 6 * (r + 1)]) for r in range(4)]
    expected = torch.stack([torch.stack([j.logits[c * 4 + r] for r, j in enumerate(joint)]).mean() for c in range(3)])
    assert torch.allclose(out.logits, expected)
    inst = torch.stack([j.instance_logits.view(7, 3, 4)[:, :, r] for r, j in enumerate(joint)]).mean(0)
    assert torch.allclose(out.instance_logits, inst)


def test_training_sees_each_view_with_its_joint_label():
    """In training the head gets view r with the joint label (class, r); INS's negative class of view r is
    the joint (negative, r), so its candidate labels stay within that view."""
    torch.manual_seed(0)
    head = create_head("ins", 2 * 8, 2, label_augmentation={"kind": "rotation", "views": 2}).train()
    x = torch.randn(10, 16)
    out = head(x, None, 1, bag_id=5)
    targets = [v.aux["pseudo_targets"] for v in out.views]
    assert [t.shape for t in targets] == [(10, 4), (10, 4)]
    for r, t in enumerate(targets):  # mass only on (negative, r) = 0 * 2 + r and (tumour, r) = 1 * 2 + r
        allowed = torch.zeros(4, dtype=torch.bool)
        allowed[[r, 2 + r]] = True
        assert torch.all(t[:, ~allowed] == 0) and torch.allclose(t.sum(1), torch.ones(10))
    assert set(head.inner._targets) == {10, 11}  # per-tile state of bag 5, one per view
    assert head.inner.options["negative_class"] == 0  # restored after the call
    negative = head(x, None, 0, bag_id=6)
    for r, v in enumerate(negative.views):  # a negative bag's tiles are (negative, r), all of them
        assert torch.all(v.aux["pseudo_targets"].argmax(1) == r)
    loss = head.loss(out, torch.tensor(1), None)
    loss.backward()
    assert torch.isfinite(loss) and head.inner.classifier.weight.grad is not None


@pytest.mark.parametrize("name", ["ins", "wsseg", "abmil"])
def test_heads_train_reload_identically_and_predict(mil_cohort, rot4, tmp_path, name):
    from pathweak.heatmap import load_scores

    cfg = TrainConfig(head=name, label_augmentation="rotation", max_epochs=3, min_epochs=1, lr=1e-3, bootstrap=0,
                      device="cpu")
    run = train_cohort([rot4], mil_cohort["labels"], tmp_path / name, cfg, progress=False)
    meta = json.loads((tmp_path / name / "models" / "seed0_fold0" / "model.json").read_text())
    assert meta["head"] == name and meta["head_options"]["label_augmentation"] == {"kind": "rotation", "views": 4}
    assert meta["feature_dim"] == 4 * 192 and meta["n_outputs"] == 2
    model = load_model(tmp_path / name / "models" / "seed0_fold0")
    bank = load_feature_bank([rot4], device="cpu", progress=False)
    for i in range(len(bank)):
        a, out = reloaded_and_live(model, run.fits[0].head, bank, i)
        assert np.array_equal(a.slide, torch.softmax(out.logits, -1).numpy())
        assert np.array_equal(a.instance, torch.softmax(out.instance_logits, -1).numpy())
    (r,) = predict_slides(tmp_path / name, [rot4 / "test_001.zarr"], out_dir=tmp_path, progress=False)
    scores = load_scores(r.results).scores
    extra = {"ins": {"mask", "pseudo_label"}, "wsseg": {"mask"}, "abmil": {"attention"}}[name]
    assert set(scores) == {"prob_normal", "prob_tumour"} | extra
    assert abs(sum(r.slide_scores.values()) - 1) < 1e-5


def test_bad_combinations_are_one_clear_error(mil_cohort, rot4, tmp_path):
    plain = mil_cohort["features"]
    cases = [
        ([plain], TrainConfig(head="ins", label_augmentation="rotation"), plain, "extract --rotations 4"),
        ([rot4], TrainConfig(head="ins"), rot4, "--label-augmentation rotation"),
        ([rot4], TrainConfig(head="clam_sb", label_augmentation="rotation"), None, "cannot train with label augmentation"),
    ]
    for features, cfg, where, phrase in cases:
        with pytest.raises(ConfigError) as err:
            train_cohort(features, mil_cohort["labels"], tmp_path / "run", cfg, progress=False)
        assert phrase in str(err.value) and (where is None or str(where) in str(err.value))
        assert not (tmp_path / "run").exists()
    for kw, phrase in (({"task": "regression"}, "has no classes"), ({}, "unknown label augmentation")):
        with pytest.raises(ConfigError, match=phrase):
            TrainConfig(label_augmentation="rotation" if kw else "flip", **kw)
    with pytest.raises(ConfigError, match="takes 2 or 4"):
        extract_features([], "timm:vit_tiny_patch16_224", tmp_path, weights="random", rotations=3)
    with pytest.raises(ConfigError, match="do not combine"):
        extract_features([], "timm:vit_tiny_patch16_224", tmp_path, weights="random", rotations=4, tokens=2)


def test_cli_label_augmentation_on_a_head_that_cannot_take_it(rot4, mil_cohort, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", str(rot4), "--labels", str(mil_cohort["labels"]), "-o", str(out), "--head", "clam_mb",
                   "--label-augmentation", "rotation", "--epochs", "1", "--bootstrap", "0", "--device", "cpu")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "clam_mb head cannot train with label augmentation" in lines[0], proc.stderr
    assert not out.exists()


def test_rotations_of_3d_patches_are_refused(tmp_path):
    from conftest import BRAIN1, need_shared

    need_shared(BRAIN1)
    from pathweak.config import StoreSpec, VolumeSpec
    from pathweak.volumes import tile_volume

    spec = VolumeSpec(spacing_mm=(4.0, 4.0, 4.0), patch_px=16, min_foreground=0.25)
    store = tile_volume(BRAIN1, tmp_path / "vol", spec, StoreSpec(shard_tiles=32), progress=False).store
    (r,) = extract_features([store], "monai:resnet10", tmp_path, weights="random", rotations=4, progress=False)
    assert r.status == "failed" and "rotation views are of 2D tiles" in r.error and str(store) in r.error
