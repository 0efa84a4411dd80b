"""One ViT for 2D tiles and 3D patches (Uni4Eye's unified patch embedding): ``pretrain --method mae`` on real
H&E tiles (EBHI) and real MRI patches (pyradiomics brain1) together trains one transformer behind a 2D and a 3D
patch embedding, mixes the kinds per epoch by its rule, exports an encoder that embeds both kinds of store
(``encoders info`` says so); bad combinations are one clear error; a CPU-time budget stops the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import BRAIN1, SHARED, need_shared, run_cli

from pathweak.config import StoreSpec, VolumeSpec
from pathweak.encoders import create_encoder
from pathweak.encoders.unified import UnifiedViT
from pathweak.errors import ConfigError
from pathweak.ssl import SSLConfig, pretrain
from pathweak.ssl.mixed import KindBatches
from pathweak.ssl.module import SSLModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EBHI = SHARED / "labeled" / "ebhi_seg"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(2D TileStore of 24 EBHI images, 3D store of the brain MRI's 135 patches of 16^3 voxels)."""
    need_shared(BRAIN1, EBHI)
    from pathweak.tiling.images import images_to_store
    from pathweak.volumes import tile_volume

    root = tmp_path_factory.mktemp("unified")
    files = sorted((EBHI / "Normal" / "image").glob("*.png"))[:24]
    flat = images_to_store(files, root / "tiles" / "ebhi.zarr", 224, progress=False).path
    spec = VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), patch_px=16, min_foreground=0.25)
    cubes = tile_volume(BRAIN1, root / "vol", spec, StoreSpec(shard_tiles=32), progress=False).store
    return flat, cubes


def tiny(method: str = "mae", **kw) -> SSLConfig:
    base = dict(depth=2, img_size=32, batch_size=8, rankme_samples=16, num_workers=0, max_epochs=1,
                samples_per_epoch=48, warmup_steps=2, decoder_dim=64, decoder_depth=1)
    return SSLConfig.tiny(method, **(base | kw))


def test_one_transformer_behind_two_patch_embeddings():
    cfg = tiny(unified=True)
    module = SSLModule(cfg, total_steps=10)
    net = module.encoder
    assert isinstance(net, UnifiedViT) and module.mae.encoder is net.vit and module.mae3d.encoder is net.volume
    assert net.volume.blocks is net.vit.blocks and net.volume.cls_token is net.vit.cls_token
    keys = list(net.state_dict())
    assert not [k for k in keys if k.startswith("volume.blocks")]  # every parameter stored once
    assert {"volume.patch_embed.proj.weight", "volume.pos_embed", "vit.patch_embed.proj.weight"} <= set(keys)
    assert net(torch.randn(2, 3, 32, 32)).shape == net(torch.randn(2, 1, 16, 16, 16)).shape == (2, 192)
    loss = module.ssl_loss([torch.randn(4, 1, 16, 16, 16)], torch.Generator().manual_seed(0))
    loss.backward()  # the 3D objective trains the shared blocks and the 3D embedding, not the 2D one
    assert net.vit.blocks[0].attn.qkv.weight.grad is not None and net.volume.patch_embed.proj.weight.grad is not None
    assert net.vit.patch_embed.proj.weight.grad is None


def test_each_epoch_mixes_batches_of_one_kind_by_the_rule():
    is_3d = np.array([False] * 30 + [True] * 10)
    sampler = KindBatches(is_3d, batch_size=4, num_samples=40, share=None, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10 and all(len(b) == 4 for b in batches)
    kinds = [set(is_3d[b].tolist()) for b in batches]
    assert all(len(k) == 1 for k in kinds) and sum(k == {True} for k in kinds) == 2  # 10 x (10 / 40) 3D batches
    assert list(sampler) == batches  # fixed by seed and epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches
    half = KindBatches(is_3d, batch_size=4, num_samples=40, share=0.5, seed=0)
    assert sum(bool(is_3d[b[0]]) for b in half) == 5
    few = KindBatches(np.array([False] * 99 + [True]), batch_size=4, num_samples=40, share=None, seed=0)
    assert sum(len(b) for b in few if b[0] == 99) == 4  # one batch of each kind at least (drawn with replacement)


def test_mae_on_2d_and_3d_stores_exports_one_encoder_of_both(stores, tmp_path):
    from pathweak.features import FeatureStore, extract_features
    from pathweak.tiling import TileStore

    flat, cubes = stores
    out = tmp_path / "enc"
    result = pretrain([flat, cubes], out, tiny(), progress=False)
    assert result.steps == 6 and len(result.rankme) == 1 and result.rankme[0]["tiles"] == 16
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["input"] == "rgb+volume" and meta["training"]["config"]["unified"] is True
    assert meta["volume"] == {"img_size": 16, "patch_size": 4, "in_chans": 1, "mean": [0.5], "std": [0.25]}
    enc = create_encoder(f"pathweak:{out}")
    done = extract_features([flat, cubes], enc, tmp_path, num_workers=0, progress=False)
    assert [r.status for r in done] == ["extracted", "extracted"], [r.error for r in done]
    for r, side in zip(done, (None, 16), strict=True):
        feats = FeatureStore.open(r.store)
        with TileStore.open(r.tile_store) as s:
            tiles = torch.from_numpy(s.read_tiles([0, 1]))
        direct = enc.embed(tiles).numpy()
        assert np.allclose(np.asarray(feats.features[:2], np.float32), direct, rtol=1e-2, atol=1e-2)
        if side:  # the 3D path: the volume branch on the normalised cube
            x = (tiles.unsqueeze(1).float() / 255 - 0.5) / 0.25
            with torch.no_grad():
                assert torch.allclose(enc.backbone.volume(x), torch.from_numpy(direct), atol=1e-5)
    info = run_cli("encoders", "info", f"pathweak:{out}")
    assert info.returncode == 0, info.stderr
    record = json.loads(info.stdout)
    assert record["inputs"] == ["rgb", "volume"] and record["volume"]["img_size"] == 16


def test_bad_combinations_are_one_clear_error(stores, tmp_path):
    flat, cubes = stores
    with pytest.raises(ConfigError, match="holds 3D patches") as err:  # DINO trains 2D tiles only
        pretrain([flat, cubes], tmp_path / "dino", tiny("dino"), progress=False)
    assert "--method mae with 2D TileStores beside them" in str(err.value)
    with pytest.raises(ConfigError, match="pretrained with --method mae, not dino"):
        tiny("dino", unified=True)
    with pytest.raises(ConfigError, match="needs 2D TileStores and 3D patch stores together"):
        pretrain([flat], tmp_path / "one", tiny(unified=True), progress=False)
    with pytest.raises(ConfigError, match="--adapt-from"):
        tiny(unified=True, adapt_from="x")
    with pytest.raises(ConfigError, match="multiple of the 3D patch"):
        tiny(unified=True, volume_img_size=18)
    # a 3D store for an encoder that embeds 2D tiles only (MAE on 2D tiles alone) is refused with the fix
    out = tmp_path / "flat"
    pretrain([flat], out, tiny(max_epochs=1, samples_per_epoch=16), progress=False)
    assert run_cli("encoders", "info", f"pathweak:{out}").stdout.count('"rgb"') == 1
    proc = run_cli("extract", str(cubes), "--encoder", f"pathweak:{out}", "-o", str(tmp_path / "x"), "--workers", "0")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "holds 3D patches" in proc.stderr and "embeds 2D RGB tiles" in proc.stderr and str(cubes) in proc.stderr
    assert not (tmp_path / "x" / "features").exists()


def test_cpu_time_budget_stops_the_run(stores, tmp_path):
    flat, _ = stores
    cfg = tiny(max_epochs=1000, samples_per_epoch=16, max_cpu_minutes=0.01)
    result = pretrain([flat], tmp_path / "budget", cfg, progress=False)
    spent = result.schedule["cpu_seconds"]  # at the last step's end: the next step found the 0.6 s spent
    assert 0 < result.epochs < 1000 and 0.3 <= spent <= 5 and result.schedule["progress"] > 0.5
    assert json.loads((tmp_path / "budget" / "encoder.json").read_text())["training"]["schedule"]["cpu_seconds"] == spent
