"""Slide embeddings: FEATHER's published state-dict layout (random tensors of the published shapes, hub layout:
``config.json`` + ``model.safetensors`` with transformers' ``model.`` prefix) loaded key by key into pathweak's
ABMIL, its slide feature against MIL-Lab's forward written out, ``embed-slides`` writing one-row FeatureStores
that ``train`` reads as one-instance bags, and ``train --init feather-...``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from pathweak.errors import ConfigError

IN_DIM = 768  # FEATHER-24K on CONCH v1.5
REPO_DIR = "models--MahmoodLab--abmil.base.conch_v15.pc108-24k"
PUBLISHED = {  # MIL-Lab's ABMIL (base config) as transformers' ABMILModel saves it: self.model -> "model."
    "model.patch_embed.0.weight": (512, IN_DIM),
    "model.patch_embed.0.bias": (512,),
    "model.global_attn.attention_a.0.weight": (384, 512),
    "model.global_attn.attention_a.0.bias": (384,),
    "model.global_attn.attention_b.0.weight": (384, 512),
    "model.global_attn.attention_b.0.bias": (384,),
    "model.global_attn.attention_c.weight": (1, 384),
    "model.global_attn.attention_c.bias": (1,),
}


@pytest.fixture
def feather_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding FEATHER-conch-v1.5 in hub layout with random tensors."""
    from safetensors.torch import save_file

    snap = tmp_path / "hf" / "hub" / REPO_DIR / "snapshots" / "feedbeef"
    snap.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in PUBLISHED.items()}
    save_file(tensors, str(snap / "model.safetensors"))
    config = {"model_type": "abmil", "gate": True, "embed_dim": 512, "attn_dim": 384, "num_fc_layers": 1,
              "dropout": 0.25, "in_dim": IN_DIM, "num_classes": 0}  # fmt: skip
    (snap / "config.json").write_text(json.dumps(config))
    (tmp_path / "hf" / "hub" / REPO_DIR / "refs").mkdir()
    (tmp_path / "hf" / "hub" / REPO_DIR / "refs" / "main").write_text("feedbeef")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return snap, tensors


def mil_lab_slide_feature(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """MIL-Lab's ABMIL.forward_features written out from its source (eval mode): the reference."""
    h = torch.relu(x @ t["model.patch_embed.0.weight"].T + t["model.patch_embed.0.bias"])
    a = torch.tanh(h @ t["model.global_attn.attention_a.0.weight"].T + t["model.global_attn.attention_a.0.bias"])
    b = torch.sigmoid(h @ t["model.global_attn.attention_b.0.weight"].T + t["model.global_attn.attention_b.0.bias"])
    scores = (a * b) @ t["model.global_attn.attention_c.weight"].T + t["model.global_attn.attention_c.bias"]
    weights = torch.softmax(scores.T, dim=-1)  # (1, M)
    return (weights @ h)[0]


def test_feather_layout_loads_key_by_key_into_pathweaks_abmil(feather_cache):
    from pathweak.features.slide_embed import load_feather
    from pathweak.heads.feather import to_abmil
    from pathweak.heads.pooling import ABMIL

    snap, tensors = feather_cache
    head, record = load_feather("feather-conch-v1.5", n_outputs=3)
    assert isinstance(head, ABMIL) and record["weights"] == str(snap / "model.safetensors")
    own = head.state_dict()
    mapped = to_abmil(tensors)
    assert set(mapped) == {k for k in own if not k.startswith("classifier.")}  # every key, nothing left over
    for key, value in mapped.items():
        assert torch.equal(own[key], value), key
    x = torch.randn(37, IN_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(head.pool(x)[0], mil_lab_slide_feature(tensors, x), rtol=1e-5, atol=1e-6)
    # the same from a folder; a broken or foreign checkpoint is one clear error
    assert load_feather("feather-conch-v1.5", snap)[1]["weights"] == str(snap / "model.safetensors")
    with pytest.raises(ConfigError, match="not part of FEATHER's ABMIL"):
        to_abmil({"model.transformer.0.weight": torch.zeros(1)}, "w")
    from safetensors.torch import save_file

    bad = dict(tensors)
    bad["model.patch_embed.0.weight"] = torch.zeros(512, 1024)
    save_file(bad, str(snap.parent / "bad.safetensors"))
    with pytest.raises(ConfigError, match="with another shape"):
        load_feather("feather-conch-v1.5", snap.parent / "bad.safetensors")


def _feature_stores(root, n_slides: int, dim: int, preset: str | None = "conch-v1.5") -> list:
    """Real FeatureStores on disk (the format extract writes) with random features of ``dim``."""
    from pathweak.store import begin, commit
    from pathweak.store.features import create_feature_store

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_slides):
        final = root / "features" / "enc" / f"s{i}.zarr"
        tmp = begin(final)
        n = 5 + i % 4
        coords = np.stack(np.meshgrid(np.arange(n) * 224, [0]), -1).reshape(-1, 2)
        attrs = {"cache_key": f"k{i}", "slide_id": f"s{i}", "n_tiles": n, "embed_dim": dim,
                 "encoder": {"name": "x", "encoder_id": "enc", "embed_dim": dim, "extra": {"preset": preset} if preset else {}},
                 "tile_store": {"path": "none", "cache_key": None}}  # fmt: skip
        arr = create_feature_store(tmp, n, dim, coords, attrs)
        arr[...] = (rng.normal(0, 1, (n, dim)) + (i % 2)).astype(np.float16)
        commit(tmp, final, store=True)
        paths.append(final)
    return paths


def test_embed_slides_writes_one_row_stores_train_reads(feather_cache, tmp_path):
    from pathweak.features import FeatureStore

    stores = _feature_stores(tmp_path / "in", 12, IN_DIM)
    proc = run_cli(
        "embed-slides", str(stores[0].parent), "--method", "feather-conch-v1.5", "-o", str(tmp_path / "o"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["status"] for r in rows] == ["embedded"] * 12 and all(r["dim"] == 512 for r in rows)
    one = FeatureStore.open(rows[0]["store"])
    assert len(one) == 1 and one.header.rows == "slide" and one.features.shape == (1, 512)
    assert one.attrs["slide_embedding"]["method"] == "feather-conch-v1.5"
    again = json.loads(run_cli("embed-slides", str(stores[0].parent), "--method", "feather-conch-v1.5", "-o",
                               str(tmp_path / "o"), "--json").stdout)  # fmt: skip
    assert {r["status"] for r in again} == {"skipped"}
    mean = json.loads(run_cli("embed-slides", str(stores[0].parent), "-o", str(tmp_path / "o"), "--json").stdout)
    s3 = next(r for r in mean if r["slide_id"] == "s3")
    want = FeatureStore.open(stores[3]).features.astype(np.float32).mean(0)
    np.testing.assert_allclose(FeatureStore.open(s3["store"]).features[0], want, atol=1e-2)
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide_id", "patient_id", "label"])
        w.writerows([[f"s{i}", f"p{i}", "a" if i % 2 else "b"] for i in range(12)])
    run = run_cli("train", str(tmp_path / "o" / "features" / "enc-slide-mean"), "--labels", str(labels), "-o",
                  str(tmp_path / "run"), "--head", "mean", "--folds", "3", "--epochs", "3", "--min-epochs", "1",
                  "--bootstrap", "10", "--no-progress", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_train_init_feather_starts_from_its_weights(feather_cache, tmp_path):
    import torch

    from pathweak.features.slide_embed import init_head
    from pathweak.heads import create_head
    from pathweak.heads.feather import to_abmil
    from pathweak.train.config import TrainConfig

    _, tensors = feather_cache
    cfg = TrainConfig(head="abmil", init="feather-conch-v1.5")
    assert cfg.head_options == {"hidden": 512, "attn_dim": 384}
    head = create_head("abmil", IN_DIM, 2, **cfg.head_options)
    init_head(head, "feather-conch-v1.5")
    for key, value in to_abmil(tensors).items():
        assert torch.equal(head.state_dict()[key], value), key
    with pytest.raises(ConfigError, match="initialises an abmil head of 768 inputs"):
        init_head(create_head("abmil", 1024, 2, hidden=512, attn_dim=384), "feather-conch-v1.5")
    with pytest.raises(ConfigError, match="is an ABMIL"):
        TrainConfig(head="clam_sb", init="feather-conch-v1.5")
    stores = _feature_stores(tmp_path / "in", 12, IN_DIM)
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,patient_id,label\n" + "".join(f"s{i},p{i},{'ab'[i % 2]}\n" for i in range(12)))
    run = run_cli("train", str(stores[0].parent), "--labels", str(labels), "-o", str(tmp_path / "run"), "--head", "abmil",
                  "--init", "feather-conch-v1.5", "--folds", "3", "--epochs", "2", "--min-epochs", "1",
                  "--bootstrap", "10", "--no-progress", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert config["init"] == "feather-conch-v1.5" and config["head_options"] == {"hidden": 512, "attn_dim": 384}


def test_feather_refuses_other_features(feather_cache, tmp_path):
    wrong_dim = _feature_stores(tmp_path / "a", 1, 1024, "uni")
    proc = run_cli("embed-slides", str(wrong_dim[0]), "--method", "feather-conch-v1.5", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "takes 768 (conch-v1.5)" in proc.stderr and "--encoder conch-v1.5" in proc.stderr
    other = _feature_stores(tmp_path / "b", 1, IN_DIM, "phikon")
    proc = run_cli("embed-slides", str(other[0]), "--method", "feather-conch-v1.5", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "come from phikon" in proc.stderr
    missing = run_cli("embed-slides", str(other[0]), "--method", "feather-uni", "-o", str(tmp_path / "o"))
    assert missing.returncode == 2 and "no weights for feather-uni on this machine" in missing.stderr
    assert "Request access on https://huggingface.co/MahmoodLab/abmil.base.uni.pc108-24k" in missing.stderr
