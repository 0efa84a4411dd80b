"""Device decode (features/decode.py): the raw-JPEG-bytes path gives the same tiles and features as the CPU
loader path; --decode falls back cleanly without CUDA; the CUDA path agrees within a grey level (gpu)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import LC25000, need_shared

from pathweak.config import StoreSpec
from pathweak.encoders import create_encoder
from pathweak.errors import ConfigError
from pathweak.features import FeatureStore, extract_features
from pathweak.features.decode import (
    RawTileBatches,
    check_decode,
    device_batches,
    device_decodable,
)
from pathweak.tiling import TileStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# nvJPEG and libjpeg-turbo may differ by a grey level; float16 features of a ViT then differ by ~1e-2
GREY_LEVELS = 2
FEATURE_ATOL = 3e-2


@pytest.fixture(scope="module")
def lc_store(tmp_path_factory):
    """150 real LC25000 tiles in a JPEG TileStore with 64-tile shards (batches cross shard borders)."""
    need_shared(LC25000)
    from pathweak.tiling.images import images_to_store, list_images

    files = list_images(LC25000)
    files = [files[i] for i in np.linspace(0, len(files) - 1, 150).astype(int)]
    out = tmp_path_factory.mktemp("decode")
    return images_to_store(files, out / "tiles" / "lc.zarr", 224, progress=False).path


def tiny_encoder():
    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=112)


def test_raw_bytes_decode_to_the_stores_tiles(lc_store):
    with TileStore.open(lc_store) as store:
        assert store.shard_tiles < len(store)  # several shards
        ref = store.read_tiles(slice(0, len(store)))
        raw = RawTileBatches(store, "cpu", batch=48)  # 48 does not divide the shard size: batches straddle shards
        batches = list(raw.batches())
    assert [len(b) for b in batches] == [48, 48, 48, 6]
    got = torch.cat(batches).numpy()
    assert got.shape == ref.shape and got.dtype == np.uint8
    assert int(np.abs(got.astype(int) - ref.astype(int)).max()) <= GREY_LEVELS


def test_raw_bytes_features_agree_with_the_cpu_loader_path(lc_store, tmp_path):
    enc = tiny_encoder()
    (res,) = extract_features([lc_store], enc, tmp_path, num_workers=0, progress=False, decode="cpu")
    assert res.status == "extracted"
    stored = FeatureStore.open(res.store).features.astype(np.float32)
    with TileStore.open(lc_store) as store:
        raw = np.concatenate([enc.embed(b).numpy() for b in RawTileBatches(store, "cpu").batches()])
    assert raw.shape == stored.shape
    assert np.abs(raw - stored).max() <= FEATURE_ATOL


def test_decode_falls_back_to_the_cpu_without_cuda(lc_store, tmp_path):
    cpu = torch.device("cpu")
    with TileStore.open(lc_store) as store:
        assert device_decodable(store)
        assert check_decode("auto", cpu) == "cpu" and device_batches(store, cpu, "auto") is None
        assert device_batches(store, cpu, "cpu") is None
    with pytest.raises(ConfigError, match="--decode"):
        check_decode("nvjpeg", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            extract_features([lc_store], tiny_encoder(), tmp_path, device="cpu", decode="gpu", progress=False)
        assert not (tmp_path / "features").exists()  # nothing written
    (res,) = extract_features([lc_store], tiny_encoder(), tmp_path, device="auto", decode="auto", num_workers=0,
                              progress=False)
    assert res.status == "extracted" and len(FeatureStore.open(res.store)) == 150


def test_lossless_stores_are_not_device_decodable(tmp_path):
    need_shared(LC25000)
    from pathweak.tiling.images import images_to_store, list_images

    files = list_images(LC25000)[:4]
    store = images_to_store(files, tmp_path / "ll.zarr", 224, StoreSpec(compression="lossless"), progress=False)
    assert not device_decodable(store)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_decode_gpu_without_cuda_exits_2(lc_store, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pathweak_cli.main", "extract", str(lc_store), "--encoder",
         "timm:vit_tiny_patch16_224", "--weights", "random", "-o", str(tmp_path), "--decode", "gpu", "--no-progress"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--decode gpu needs a CUDA device" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_decode_agrees_with_cpu_decode(lc_store, tmp_path):
    with TileStore.open(lc_store) as store:
        ref = store.read_tiles(slice(0, len(store)))
        gpu = torch.cat([b.cpu() for b in RawTileBatches(store, "cuda").batches()]).numpy()
    assert int(np.abs(gpu.astype(int) - ref.astype(int)).max()) <= GREY_LEVELS
    enc = tiny_encoder()
    (a,) = extract_features([lc_store], enc, tmp_path / "gpu", device="cuda", decode="gpu", progress=False)
    (b,) = extract_features([lc_store], enc, tmp_path / "cpu", device="cuda", decode="cpu", num_workers=1, progress=False)
    fa = FeatureStore.open(a.store).features.astype(np.float32)
    fb = FeatureStore.open(b.store).features.astype(np.float32)
    assert np.abs(fa - fb).max() <= 0.1  # bf16 autocast on both sides: its rounding dominates
    assert np.array_equal(FeatureStore.open(a.store).coords, FeatureStore.open(b.store).coords)
