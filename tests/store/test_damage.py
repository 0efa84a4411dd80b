"""Each damage mode on each store kind gives one clear error naming the store: from the API, and from
the CLI (extract, train, heatmap) with exit status 2, no traceback and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathweak.errors import StoreError
from pathweak.features import FeatureStore
from pathweak.heatmap import read_results
from pathweak.tiling import TileStore

from .conftest import copy_store, run_cli

# the file each kind's damage goes into: a tile shard, a feature chunk, a score chunk
TARGET = {"tiles": "tiles/c/0/0/0/0", "features": "features/c/0/0", "results": "scores/attention/c/0"}
MODES = ["bitflip", "zeroed", "truncated", "index", "missing"]


def damage(store: Path, kind: str, mode: str) -> None:
    """Damage ``store`` as a disk or a copy would: flipped bits, a zeroed block, a cut-off file, a damaged
    shard index (for arrays without shards: their metadata), a missing shard or chunk file."""
    target = store / TARGET[kind]
    data = bytearray(target.read_bytes())
    if mode == "bitflip":
        data[len(data) // 3] ^= 0x5A
        data[len(data) // 3 + 7] ^= 0x01
        target.write_bytes(bytes(data))
    elif mode == "zeroed":
        start = len(data) // 4
        data[start : start + 64] = bytes(min(64, len(data) - start))
        target.write_bytes(bytes(data))
    elif mode == "truncated":
        target.write_bytes(bytes(data[: len(data) // 2]))
    elif mode == "index":
        if kind == "tiles":  # the shard index sits at the end, before its CRC32C
            data[-20] ^= 0xFF
            target.write_bytes(bytes(data))
        else:
            meta = store / TARGET[kind].split("/c/")[0] / "zarr.json"
            meta.write_text(meta.read_text()[: len(meta.read_text()) // 2])
    elif mode == "missing":
        target.unlink()


def read_all(kind: str, path: Path) -> None:
    if kind == "tiles":
        with TileStore.open(path) as s:
            s.read_tiles(slice(None))
    elif kind == "features":
        assert FeatureStore.open(path).features.ndim == 2
    else:
        read_results(path)


@pytest.mark.parametrize("kind", ["tiles", "features", "results"])
@pytest.mark.parametrize("mode", MODES)
def test_damage_is_a_store_error_naming_the_store(stores, kind, mode, tmp_path):
    path = copy_store(stores[kind], tmp_path)
    read_all(kind, path)  # the intact copy reads
    damage(path, kind, mode)
    with pytest.raises(StoreError) as err:
        read_all(kind, path)
    text = str(err.value)
    assert str(path) in text and "damaged" in text and "\n" not in text
    assert "re-run" in text  # the fix


def _clean_failure(proc, store: Path, out: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(store) in errors[0] and "damaged" in errors[0], proc.stderr
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not written, written


SLOW_BUT_BITFLIP = [m if m == "bitflip" else pytest.param(m, marks=pytest.mark.slow) for m in MODES]


@pytest.mark.parametrize("mode", SLOW_BUT_BITFLIP)  # ~25 s each (torch start-up and a ViT)
def test_extract_on_a_damaged_tile_store(stores, mode, tmp_path):
    store = copy_store(stores["tiles"], tmp_path / "in")
    damage(store, "tiles", mode)
    out = tmp_path / "out"
    proc = run_cli("extract", str(store), "--encoder", "timm:vit_tiny_patch16_224", "--weights", "random",
                   "--out", str(out), "--no-progress", "--workers", "1")
    _clean_failure(proc, store, out)


@pytest.mark.slow  # a minute or more each: SSL start-up
@pytest.mark.parametrize("mode", ["bitflip", "missing"])
def test_pretrain_on_a_damaged_tile_store(stores, mode, tmp_path):
    """Pretraining reads tiles at random in loader workers: a damaged tile is the same one error."""
    store = copy_store(stores["tiles"], tmp_path / "in")
    for shard in sorted((store / "tiles" / "c").iterdir()):  # every shard, so a random read meets one
        target = shard / "0" / "0" / "0"
        if mode == "missing":
            target.unlink()
        else:
            data = bytearray(target.read_bytes())
            for i in range(5, len(data) - 400, 997):
                data[i] ^= 0x21
            target.write_bytes(bytes(data))
    out = tmp_path / "enc"
    proc = run_cli("pretrain", str(store), "--out", str(out), "--tiny", "--epochs", "1", "--workers", "1",
                   "--no-progress")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(store) in errors[0] and "damaged" in errors[0], proc.stderr[-3000:]
    assert not (out / "encoder.safetensors").exists()


@pytest.mark.parametrize("mode", MODES)
def test_train_on_a_damaged_feature_store(stores, mode, tmp_path):
    folder = tmp_path / "features"
    store = copy_store(stores["features"], folder)
    rows = [f"{store.stem},p0,a"]
    for i, label in enumerate("bab", start=1):  # intact stores of three more "slides"
        other = folder / f"s{i}.zarr"
        __import__("shutil").copytree(stores["features"], other)
        meta = json.loads((other / "zarr.json").read_text())
        meta["attributes"]["slide_id"] = f"s{i}"
        (other / "zarr.json").write_text(json.dumps(meta))
        rows.append(f"s{i},p{i},{label}")
    damage(store, "features", mode)
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,patient_id,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    proc = run_cli("train", "--features", str(folder), "--labels", str(labels), "--out", str(out), "--folds", "2",
                   "--no-progress")
    _clean_failure(proc, store, out)


@pytest.mark.parametrize("mode", MODES)
def test_heatmap_on_a_damaged_results_store(stores, mode, tmp_path):
    store = copy_store(stores["results"], tmp_path / "in")
    damage(store, "results", mode)
    out = tmp_path / "maps"
    proc = run_cli("heatmap", str(store), "--out", str(out), "-f", "png", "--no-progress")
    _clean_failure(proc, store, out)


def test_lengths_that_disagree(stores, tmp_path):
    path = copy_store(stores["features"], tmp_path)
    meta_path = path / "coords" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][0] -= 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="lengths disagree"):
        FeatureStore.open(path)


@pytest.mark.parametrize("kind", ["tiles", "features", "results"])
def test_open_refuses_not_a_store_wrong_kind_newer_and_incomplete(stores, kind, tmp_path):
    from pathweak.store import open_store

    with pytest.raises(StoreError, match="no .* here"):
        open_store(tmp_path / "nothing.zarr", kind)
    other = {"tiles": "features", "features": "results", "results": "tiles"}[kind]
    with pytest.raises(StoreError, match=f"not a .*kind='{other}'"):
        open_store(stores[other], kind)
    path = copy_store(stores[kind], tmp_path)
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["pathweak_format"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="newer than this pathweak reads.*Upgrade pathweak"):
        open_store(path, kind)
    meta["attributes"].update(pathweak_format=1, complete=False)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path, kind)
    meta_path.write_text("{not json")
    with pytest.raises(StoreError, match="damaged.*zarr.json"):
        open_store(path, kind)


def test_every_chunk_carries_a_checksum_zarr_reads(stores):
    """The checksums are Zarr's own crc32c codec: plain Zarr reads the stores and checks them."""
    import zarr

    for kind, path in stores.items():
        name = {"tiles": "tiles", "features": "features", "results": "scores/attention"}[kind]
        arr = zarr.open_array(str(path / name), mode="r")
        meta = json.loads((path / name / "zarr.json").read_text())
        assert "crc32c" in json.dumps(meta["codecs"]), kind
        assert np.asarray(arr[:2]).shape[0] == 2
