"""Device decode (features/decode.py): the raw-JPEG-bytes path gives the same tiles and features as the CPU
loader path; --decode falls back cleanly without CUDA; decoder errors are classified (damaged bytes, out of
memory, no device decoder) on the CPU with real corrupt JPEGs and errors raised as torch and torchvision
raise them; the CUDA path agrees within a grey level (gpu)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LC25000, need_shared

from pathweak.config import StoreSpec
from pathweak.encoders import create_encoder
from pathweak.errors import ConfigError, MemoryBudgetError, StoreError
from pathweak.features import FeatureStore, extract_features
from pathweak.features import decode as decode_module
from pathweak.features.decode import (
    RawTileBatches,
    check_decode,
    device_batches,
    device_decodable,
    jpeg_decoders,
)
from pathweak.tiling import TileStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NO_NVJPEG = "decode_jpegs_cuda: torchvision not compiled with nvJPEG support"  # torchvision's own message
# nvJPEG and libjpeg-turbo may differ by a grey level; float16 features of a ViT then differ by ~1e-2
GREY_LEVELS = 2
FEATURE_ATOL = 3e-2


@pytest.fixture(autouse=True)
def no_decoder_verdict():
    """Each test starts and ends without a process-wide "no device decoder here" verdict."""
    decode_module._UNAVAILABLE.clear()
    yield
    decode_module._UNAVAILABLE.clear()


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


def real_decoder():
    """The batched JPEG decoder extraction uses (torchcodec's or torchvision's), as (name, function)."""
    return jpeg_decoders()[0]


def failing(error, when=lambda jpegs: True):
    """The real decoder, raising ``error`` (as the library raises it) on the calls ``when`` picks."""
    name, real = real_decoder()
    calls = []

    def decode(jpegs, device):
        calls.append(len(jpegs))
        if when(jpegs):
            raise error
        return real(jpegs, device)

    return (name, decode), calls


def rewrite_chunk(store_path, tile: int, change) -> None:
    """Replace tile ``tile``'s JPEG in its shard with ``change(bytes)``, with a valid checksum: bytes that a
    buggy writer (not the disk) damaged, which only a decoder can tell."""
    from pathweak.store.shards import ShardReader, shard_key, write_shard

    with TileStore.open(store_path) as store:
        slots = store.shard_tiles
    path = shard_key(store_path / "tiles", tile // slots, 4)
    reader = ShardReader(path, slots, crc=True)
    chunks = [bytes(c) for c in reader.chunks(list(range(slots))) if c is not None]
    reader.close()
    chunks[tile % slots] = change(chunks[tile % slots])
    write_shard(path, chunks, slots, crc=True)


@pytest.fixture
def store_copy(lc_store, tmp_path):
    import shutil

    return Path(shutil.copytree(lc_store, tmp_path / "copy.zarr"))


def test_flipped_bits_are_the_stores_damage_error(store_copy):
    """The raw path checks each chunk's CRC32C, as the CPU reader does: a flipped bit is the store's damage
    error, never a tile decoded into wrong pixels."""
    shard = sorted((store_copy / "tiles" / "c").rglob("*"))[-1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 5] ^= 0x10
    shard.write_bytes(bytes(data))
    with TileStore.open(store_copy) as store, pytest.raises(StoreError, match="damaged.*checksum"):
        list(RawTileBatches(store, "cpu", batch=48).batches())


def test_a_corrupt_jpeg_is_damage_found_by_the_cpu_decoder(store_copy):
    """A JPEG cut short (with a valid checksum) fails in the device decoder; the store's strict CPU decoder
    confirms it, and the error names that tile and says to re-tile."""
    rewrite_chunk(store_copy, 70, lambda jpeg: jpeg[: len(jpeg) // 2])
    with TileStore.open(store_copy) as store, pytest.raises(StoreError) as err:
        list(RawTileBatches(store, "cpu", batch=48).batches())
    assert "tile 70 cannot be decoded" in str(err.value) and "re-tile" in str(err.value)


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.17 GiB. GPU 0 has a total capacity of 79.1 GiB"),
    RuntimeError("Error while decoding JPEG images: CUDA out of memory. Tried to allocate 38.00 MiB"),  # torchvision's batch
])
def test_out_of_memory_decodes_smaller_batches(lc_store, error):
    """Out of memory is not damage: the batch is decoded in halves, and later batches stay smaller."""
    decoder, calls = failing(error, when=lambda jpegs: len(jpegs) > 16)
    with TileStore.open(lc_store) as store:
        ref = store.read_tiles(slice(0, len(store)))
        raw = RawTileBatches(store, "cpu", batch=48, decoders=[decoder])
        got = torch.cat(list(raw.batches())).numpy()
    assert int(np.abs(got.astype(int) - ref.astype(int)).max()) <= GREY_LEVELS
    assert raw.batch <= 16 and raw.fallback is None and calls[:2] == [48, 24] and max(calls[2:]) <= 16  # then smaller


def test_out_of_memory_on_one_tile_is_a_memory_error(lc_store):
    decoder, _ = failing(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB"))
    with TileStore.open(lc_store) as store, pytest.raises(MemoryBudgetError, match="out of memory decoding one tile"):
        list(RawTileBatches(store, "cpu", batch=8, decoders=[decoder]).batches())


def test_no_nvjpeg_falls_back_to_the_cpu_once_and_says_so(lc_store):
    """A decoder without nvJPEG support (torchvision's own error) is not damage either: with --decode auto the
    tiles are decoded on the CPU from then on (the decoder is not asked again), and ``fallback`` says why."""
    decoder, calls = failing(RuntimeError(NO_NVJPEG))
    with TileStore.open(lc_store) as store:
        ref = store.read_tiles(slice(0, len(store)))
        raw = RawTileBatches(store, "cpu", batch=48, decoders=[decoder])
        got = torch.cat(list(raw.batches())).numpy()
    assert np.array_equal(got, ref) and calls == [48]  # CPU-decoded: the store's own pixels
    assert NO_NVJPEG in raw.fallback


def test_no_nvjpeg_with_decode_gpu_is_an_error(lc_store):
    decoder, _ = failing(RuntimeError(NO_NVJPEG))
    with TileStore.open(lc_store) as store, pytest.raises(ConfigError, match="--decode gpu: JPEG tiles cannot"):
        list(RawTileBatches(store, "cpu", batch=48, decoders=[decoder], strict=True).batches())


def test_the_next_store_goes_to_the_cpu_loader_after_a_fallback(lc_store):
    """After a fallback, later stores of the process skip the device path (said once, not per store)."""
    cuda = torch.device("cuda")  # a device object only: nothing touches CUDA here
    with TileStore.open(lc_store) as store:
        assert isinstance(device_batches(store, cuda, "auto"), RawTileBatches)
        decode_module._UNAVAILABLE["cuda"] = NO_NVJPEG
        assert device_batches(store, cuda, "auto") is None


def test_the_decoder_is_torchcodecs_where_installed_and_torchvision_needs_019():
    """torchvision's image decoding is deprecated since 0.29 in favour of torchcodec, which is preferred when
    installed; the torchvision fallback decodes a list of JPEGs, which needs torchvision >= 0.19."""
    import re
    import warnings

    try:
        from torchcodec.decoders import decode_jpeg  # noqa: F401
        codec = ["torchcodec"]
    except ImportError:
        codec = []
    assert [n for n, _ in jpeg_decoders()] == [*codec, "torchvision"]
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    floor = re.search(r'"torchvision>=(\d+)\.(\d+)', pyproject)
    assert floor and (int(floor[1]), int(floor[2])) >= (0, 19)
    name, fn = real_decoder()
    jpeg = torch.frombuffer(bytearray(__import__("simplejpeg").encode_jpeg(np.zeros((8, 8, 3), np.uint8))), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)  # as jpeg_decoders
        assert fn([jpeg], "cpu")[0].shape == (3, 8, 8)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_extraction_without_nvjpeg_falls_back_and_says_so(lc_store, tmp_path, monkeypatch):
    """On CUDA, a decoder without nvJPEG support (torchvision's own error): --decode auto extracts with CPU
    decoding and says so in the store's result; --decode gpu fails the store with the fix."""
    decoder, _ = failing(RuntimeError(NO_NVJPEG))
    monkeypatch.setattr(decode_module, "jpeg_decoders", lambda: [decoder])
    enc = tiny_encoder()
    (auto,) = extract_features([lc_store], enc, tmp_path / "auto", device="cuda", decode="auto", progress=False)
    assert auto.status == "extracted" and any("decoded on the CPU" in w and NO_NVJPEG in w for w in auto.warnings)
    decode_module._UNAVAILABLE.clear()
    (gpu,) = extract_features([lc_store], enc, tmp_path / "gpu", device="cuda", decode="gpu", progress=False)
    assert gpu.status == "failed" and "--decode gpu: JPEG tiles cannot be decoded" in gpu.error


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_two_encoders_share_one_copy_of_each_batch(lc_store, tmp_path):
    """Several encoders in one pass: each batch of tiles goes to the GPU once, not once per encoder."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Uploads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            src = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if (func.__name__.startswith("_to_copy") and src is not None and src.dtype == torch.uint8 and src.dim() == 4
                    and not src.is_cuda and out.is_cuda):
                Uploads.count += 1
            return out

    encs = [tiny_encoder(), create_encoder("timm:vit_tiny_patch16_224", weights="random:1", depth=2, img_size=112)]
    with Uploads():
        done = extract_features([lc_store], encs, tmp_path, device="cuda", decode="cpu", num_workers=0,
                                progress=False)
    assert [r.status for r in done] == ["extracted", "extracted"]
    assert Uploads.count == 1  # 150 tiles: one loader batch, copied once for both encoders
