"""3D MAE pretraining on the 3D patches of a real MRI: the loss falls, a run resumes, the exported 3D
ViT round-trips as a ``pathweak:`` encoder, embeds the patches in ``extract`` and feeds the 3D wsseg head;
2D stores are refused with the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import BRAIN1, LC25000, need_shared, run_cli

from pathweak.config import StoreSpec, VolumeSpec
from pathweak.encoders.vit3d import ViT3D
from pathweak.errors import ConfigError
from pathweak.ssl import SSLConfig, pretrain
from pathweak.ssl.data import TileIndex
from pathweak.ssl.data3d import VolumeViews
from pathweak.ssl.mae3d import MAE3D
from pathweak.ssl.module import SSLModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def brain_store(tmp_path_factory):
    """The real brain MRI as 135 patches of 16^3 voxels at 2 mm."""
    need_shared(BRAIN1)
    from pathweak.volumes import tile_volume

    spec = VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), patch_px=16, min_foreground=0.25)
    result = tile_volume(BRAIN1, tmp_path_factory.mktemp("brain3d"), spec, StoreSpec(shard_tiles=32), progress=False)
    return result.store


def tiny3d(**kw) -> SSLConfig:
    base = dict(depth=2, batch_size=8, rankme_samples=16, num_workers=0, max_epochs=1, samples_per_epoch=32,
                warmup_steps=2, decoder_dim=64, decoder_depth=1)
    base.update(kw)
    return SSLConfig.tiny("mae3d", **base)


def test_patchify_follows_the_token_order():
    """Token k of the patch embedding and row k of the reconstruction target are the same voxel cube."""
    mae = MAE3D(ViT3D(img_size=8, patch_size=4, embed_dim=24, depth=1, num_heads=2), 8, 0.5, 12, 1)
    cube = torch.arange(8, dtype=torch.float32).view(2, 2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)
    cube = cube.repeat_interleave(4, 2)[None, None]  # cube (z, y, x) of 4^3 voxels holds 4z + 2y + x
    rows = mae.patchify(cube)[0]
    assert rows.shape == (8, 64) and torch.equal(rows, torch.arange(8.0)[:, None].expand(8, 64))


def test_mae3d_loss_falls_on_real_mri_patches(brain_store):
    torch.manual_seed(0)
    cfg = tiny3d()
    module = SSLModule(cfg, total_steps=100)
    views = VolumeViews(TileIndex([brain_store]), cfg, np.arange(40, 48))
    batch = [torch.stack([views[i][0] for i in range(len(views))])]
    assert batch[0].shape == (8, 1, 16, 16, 16)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = module.ssl_loss(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_mae3d_resumes_round_trips_and_embeds_in_extract(brain_store, tmp_path):
    from pathweak.encoders import create_encoder
    from pathweak.features import FeatureStore, extract_features
    from pathweak.features.bank import load_feature_bank
    from pathweak.heads import create_head
    from pathweak.tiling import TileStore

    out = tmp_path / "run"
    first = pretrain([brain_store], out, tiny3d(max_epochs=1), progress=False)
    assert first.epochs == 1 and len(first.rankme) == 1 and (out / "checkpoints" / "last.ckpt").exists()
    second = pretrain([brain_store], out, tiny3d(max_epochs=2), progress=False)
    assert second.steps == 2 * first.steps  # continued, not restarted
    assert [r["epoch"] for r in second.rankme] == [0, 1]
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["input"] == "volume" and meta["vit3d"]["patch_size"] == 4 and meta["img_size"] == 16
    assert meta["training"]["method"] == "mae3d"

    enc = create_encoder(f"pathweak:{out}")
    assert enc.info.input == "volume" and enc.embed_dim == 192
    module = SSLModule(tiny3d(), total_steps=1)
    module.load_state_dict(torch.load(second.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(enc(x), module.encoder.eval()(x), atol=1e-5)

    (done,) = extract_features([brain_store], enc, tmp_path / "feats", num_workers=0, progress=False)
    assert done.status == "extracted", done.error
    tiles, feats = TileStore.open(brain_store), FeatureStore.open(done.store)
    assert len(feats) == len(tiles) and np.array_equal(feats.coords, tiles.coords)
    rows = [0, len(tiles) - 1]
    direct = enc.embed(torch.from_numpy(tiles.read_tiles(rows))).numpy()
    assert np.allclose(np.asarray(feats.features[rows], np.float32), direct, rtol=1e-2, atol=1e-2)
    bank = load_feature_bank([done.store], device="cpu", progress=False)  # the 3D head, unchanged
    head = create_head("wsseg", bank.embed_dim, 2, spatial_dims=3)
    cam, occupied, _ = head.segmentation_map(bank.bag(0).float(), bank.grid(0))
    assert cam.shape[0] == 2 and int(occupied.sum()) == len(tiles)


def test_mae3d_refuses_2d_tiles_and_bad_sizes(tmp_path):
    need_shared(LC25000)
    from pathweak.tiling.images import images_to_store, list_images

    store = images_to_store(list_images(LC25000)[:4], tmp_path / "lc.zarr", 32, progress=False).path
    with pytest.raises(ConfigError, match="mae3d trains on 3D patches") as err:
        pretrain([store], tmp_path / "run", tiny3d(), progress=False)
    assert "--mode 3d" in str(err.value)
    with pytest.raises(ConfigError, match="multiple of the 3D patch"):
        tiny3d(img_size=18)


def test_cli_offers_mae3d_and_distill():

    pretrain_help = run_cli("pretrain", "--help").stdout
    assert "mae3d" in pretrain_help and "--patch-3d" in pretrain_help
    distill_help = run_cli("distill", "--help").stdout
    for opt in ("--teacher", "--student", "STORES", "--token-weight", "--max-minutes", "--resume"):
        assert opt in distill_help


@pytest.mark.slow
def test_cli_pretrains_mae3d_on_a_volume_store(brain_store, tmp_path):

    out = tmp_path / "enc3d"
    proc = run_cli("pretrain", "--stores", str(brain_store), "-o", str(out), "--method", "mae3d", "--tiny",
                   "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["encoder"] == f"pathweak:{out}"
    assert json.loads((out / "encoder.json").read_text())["input"] == "volume"
