"""Distillation on real tiles: a small student learns a pretrained pathweak ViT teacher's embedding and
patch tokens (the loss falls, for each loss), the run resumes, the student (narrower than ViT-Tiny)
exports and round-trips as a ``pathweak:`` encoder that records its teacher and its width and extracts
features; bad teachers, stores and widths are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import LC25000, need_shared, run_cli

from pathweak.encoders.base import IMAGENET_MEAN, IMAGENET_STD
from pathweak.errors import ConfigError
from pathweak.ssl import SSLConfig, pretrain
from pathweak.ssl.data import SSLViews, TileIndex
from pathweak.ssl.distill import distill
from pathweak.ssl.module import SSLModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lc_store(tmp_path_factory):
    """48 real LC25000 tiles (all three classes) in a TileStore."""
    need_shared(LC25000)
    from pathweak.tiling.images import images_to_store, list_images

    files = list_images(LC25000)[::80][:48]
    return images_to_store(files, tmp_path_factory.mktemp("lc") / "lc.zarr", 64, progress=False).path


@pytest.fixture(scope="module")
def teacher(lc_store, tmp_path_factory):
    """A pathweak ViT-Small (2 blocks, 64 px) pretrained with MAE for one short epoch."""
    out = tmp_path_factory.mktemp("teacher")
    cfg = SSLConfig.tiny(
        "mae",
        arch="vit_small",
        depth=2,
        img_size=64,
        batch_size=8,
        rankme_samples=8,
        num_workers=0,
        max_epochs=1,
        samples_per_epoch=16,
        warmup_steps=1,
        decoder_dim=64,
        decoder_depth=1,
    )
    pretrain([lc_store], out, cfg, progress=False)
    return f"pathweak:{out}"


def student_cfg(teacher: str, **kw) -> SSLConfig:
    base = dict(
        teacher=teacher,
        arch="vit_tiny",
        depth=1,
        img_size=32,
        batch_size=8,
        rankme_samples=8,
        num_workers=0,
        max_epochs=1,
        samples_per_epoch=16,
        warmup_steps=1,
        teacher_img_size=64,
    )
    base.update(kw)
    return SSLConfig.tiny("distill", **base)


@pytest.mark.parametrize(
    "loss",
    [{}, {"distill_loss": "cosine"}, {"relation_weight": 1.0}],
    ids=["standardized", "cosine", "standardized+relation"],
)
def test_distillation_loss_falls_on_real_tiles(lc_store, teacher, loss):
    torch.manual_seed(0)
    cfg = student_cfg(teacher, **loss)
    module = SSLModule(cfg, total_steps=100)
    assert module.distiller.use_tokens and isinstance(module.distiller.proj_embed, torch.nn.Linear)  # 192 -> 384
    assert not any(
        k.startswith("distiller.teacher") for k in module.state_dict()
    )  # the teacher stays out of checkpoints
    views = SSLViews(TileIndex([lc_store]), cfg, np.arange(8), IMAGENET_MEAN, IMAGENET_STD)
    batch = [torch.stack([views[i][0] for i in range(8)])]
    assert batch[0].shape == (8, 3, 64, 64)  # views at the teacher's size; the student sees them at 32 px
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(15):
        loss = module.ssl_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_standardized_targets_weigh_every_direction_alike():
    from pathweak.ssl.distiller import standardize, standardized_loss

    g = torch.Generator().manual_seed(0)
    target = torch.randn(64, 8, generator=g) * torch.tensor([100.0, 1, 1, 1, 1, 1, 1, 0.05]) + 5
    z = standardize(target)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-4) and torch.allclose(
        z.std(0, unbiased=False), torch.ones(8), atol=1e-3
    )
    miss_big, miss_small = z.clone(), z.clone()
    miss_big[:, 0], miss_small[:, 7] = 0, 0  # dropping the largest or the smallest direction costs the same
    assert torch.isclose(standardized_loss(miss_big, target), standardized_loss(miss_small, target), rtol=1e-3)
    tokens = target.view(8, 8, 8)  # (B, tokens, D): statistics over batch and tokens together
    assert torch.allclose(standardize(tokens).reshape(-1, 8).mean(0), torch.zeros(8), atol=1e-4)


def test_whole_tile_views_are_the_tile_extraction_sees(lc_store):
    import cv2

    from pathweak.ssl.augment import to_tensor
    from pathweak.tiling import TileStore

    tiles = TileStore.open(lc_store).read_tiles(slice(0, 6))
    torch.manual_seed(0)

    def views(fraction):  # 48 px views of 64 px tiles: resized
        cfg = student_cfg("pathweak:x", teacher_img_size=48, whole_tile_views=fraction)
        ds = SSLViews(TileIndex([lc_store]), cfg, np.arange(6), IMAGENET_MEAN, IMAGENET_STD)
        return [ds[i][0] for i in range(6)]

    def distance_to_whole(view, tile):  # to the nearest of the 8 dihedral transforms of the resized tile
        small = cv2.resize(tile, (48, 48), interpolation=cv2.INTER_AREA)
        flips = [np.rot90(t, k) for t in (small, small[:, ::-1]) for k in range(4)]
        return min(float((view - to_tensor(f.copy(), IMAGENET_MEAN, IMAGENET_STD)).abs().max()) for f in flips)

    assert all(distance_to_whole(v, t) < 1e-5 for v, t in zip(views(1.0), tiles, strict=True))
    assert all(distance_to_whole(v, t) > 0.1 for v, t in zip(views(0.0), tiles, strict=True))  # augmented crops
    with pytest.raises(ConfigError, match="fraction of the views"):
        student_cfg("pathweak:x", whole_tile_views=1.5)


NARROW = dict(embed_dim=32, num_heads=2)  # narrower than any registered timm ViT


def test_student_export_resumes_round_trips_and_extracts(lc_store, teacher, tmp_path):
    from pathweak.encoders import create_encoder
    from pathweak.features import FeatureStore, extract_features
    from pathweak.tiling import TileStore

    out = tmp_path / "student"
    first = distill([lc_store], out, student_cfg(teacher, max_epochs=1, **NARROW), progress=False)
    second = distill([lc_store], out, student_cfg(teacher, max_epochs=2, **NARROW), progress=False)
    assert first.steps > 0 and second.steps == 2 * first.steps and len(second.rankme) == 2
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["distilled_from"] == teacher and meta["training"]["method"] == "distill"
    record = meta["training"]["teacher"]
    assert record["embed_dim"] == 384 and record["token_loss"] and record["weights_hash"]
    assert record["loss"] == "standardized" and record["relation_weight"] == 0 and record["whole_tile_views"] == 0
    assert record["student_parameters"] < record["parameters"] / 4
    assert meta["timm_kwargs"]["embed_dim"] == 32 and meta["timm_kwargs"]["num_heads"] == 2

    enc = create_encoder(f"pathweak:{out}")
    assert enc.embed_dim == 32 and enc.info.img_size == 32
    assert sum(p.numel() for p in enc.parameters()) == record["student_parameters"]
    module = SSLModule(student_cfg(teacher, **NARROW), total_steps=1)
    module.load_state_dict(torch.load(second.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc(x), module.encoder.eval()(x), atol=1e-5)
    (done,) = extract_features([lc_store], enc, tmp_path / "feats", num_workers=0, progress=False)
    assert done.status == "extracted", done.error
    feats, tiles = FeatureStore.open(done.store), TileStore.open(lc_store)
    assert len(feats) == len(tiles) and feats.features.shape[1] == 32
    direct = enc.embed(torch.from_numpy(tiles.read_tiles([0, 5]))).numpy()
    assert np.allclose(np.asarray(feats.features[[0, 5]], np.float32), direct, rtol=1e-2, atol=1e-2)


def test_bad_teachers_are_clear_errors(lc_store, tmp_path):
    with pytest.raises(ConfigError, match="needs a teacher"):
        SSLConfig(method="distill")
    with pytest.raises(ConfigError, match="embeds 3D volume patches"):
        distill([lc_store], tmp_path / "x", student_cfg("monai:resnet10", teacher_weights="random"), progress=False)
    with pytest.raises(ConfigError, match="needs local weights"):
        distill([lc_store], tmp_path / "y", student_cfg("timm:vit_small_patch16_224"), progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bad_student_widths_and_losses_are_clear_errors():
    with pytest.raises(ConfigError, match="multiple of num_heads 3"):
        student_cfg("pathweak:x", embed_dim=64)  # vit_tiny's 3 heads do not divide 64
    with pytest.raises(ConfigError, match="3D ViT"):
        SSLConfig.tiny("mae3d", embed_dim=96)
    with pytest.raises(ConfigError, match="unknown distillation loss"):
        student_cfg("pathweak:x", distill_loss="kl")
    assert SSLConfig(arch="vit_small", num_heads=4).width == (384, 4)


@pytest.mark.slow
def test_distill_cli(lc_store, teacher, tmp_path):

    proc = run_cli(
        "distill",
        "--teacher",
        teacher,
        "--stores",
        str(lc_store),
        "-o",
        str(tmp_path / "cli"),
        "--tiny",
        "--depth",
        "1",
        "--img-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--embed-dim",
        "48",
        "--heads",
        "2",
        "--loss",
        "cosine",
        "--whole-tile-views",
        "0.5",
        "--select",
        "last",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["teacher"] == teacher and (tmp_path / "cli" / "encoder.safetensors").exists()
    meta = json.loads((tmp_path / "cli" / "encoder.json").read_text())
    assert meta["embed_dim"] == 48 and meta["timm_kwargs"]["num_heads"] == 2
    assert meta["training"]["teacher"]["loss"] == "cosine" and meta["training"]["config"]["select"] == "last"
    assert meta["training"]["teacher"]["whole_tile_views"] == 0.5
    proc = run_cli(
        "distill",
        "--teacher",
        "timm:vit_small_patch16_224",
        "--stores",
        str(lc_store),
        "-o",
        str(tmp_path / "bad"),
        "--no-progress",
    )
    assert proc.returncode == 2 and "needs local weights" in proc.stderr and not (tmp_path / "bad").exists()
