"""Feature extraction: FeatureStore rows line up with TileStore tiles; skip; h5 export layout; CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pathweak.encoders import create_encoder
from pathweak.errors import StoreError
from pathweak.features import FeatureStore, extract_features
from pathweak.tiling import TileStore, tile_slide


@pytest.fixture(scope="module")
def cmu_tiles(svs, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat")
    return tile_slide(svs, out, progress=False).store


def tiny_encoder():
    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=112)


def test_rows_line_up_with_tile_coords(cmu_tiles, tmp_path):
    enc = tiny_encoder()
    (res,) = extract_features([cmu_tiles], enc, tmp_path, num_workers=1, progress=False)
    assert res.status == "extracted"
    fs, ts = FeatureStore.open(res.store), TileStore.open(cmu_tiles)
    assert len(fs) == len(ts) and fs.features.shape == (len(ts), 192) and fs.features.dtype == np.float16
    assert np.array_equal(fs.coords, ts.coords)
    pick = [0, len(ts) // 2, len(ts) - 1]
    direct = enc.embed(torch.from_numpy(ts.read_tiles(pick))).numpy()
    assert np.allclose(fs.features[pick].astype(np.float32), direct, atol=2e-2, rtol=1e-2)
    attrs = fs.attrs
    assert attrs["encoder"]["encoder_id"] == enc.encoder_id and attrs["tile_store"]["cache_key"] == ts.attrs["cache_key"]
    assert fs.path.parent.name == enc.encoder_id and fs.path.name == "CMU-1-Small-Region.zarr"


def test_skip_up_to_date_and_redo_when_tiles_change(cmu_tiles, svs, tmp_path):
    enc = tiny_encoder()
    first = extract_features([cmu_tiles], enc, tmp_path, num_workers=0, progress=False)[0]
    again = extract_features([cmu_tiles], enc, tmp_path, num_workers=0, progress=False)[0]
    assert again.status == "skipped" and again.store == first.store
    other = tile_slide(svs, tmp_path / "other", __import__("pathweak").TileSpec(patch_px=256), progress=False).store
    redo = extract_features([other], enc, tmp_path / "o2", num_workers=0, progress=False)[0]
    assert redo.status == "extracted" and len(FeatureStore.open(redo.store)) == len(TileStore.open(other))


def test_h5_export_layout(cmu_tiles, tmp_path):
    import h5py

    (res,) = extract_features([cmu_tiles], tiny_encoder(), tmp_path, export_h5_files=True, num_workers=0, progress=False)
    fs = FeatureStore.open(res.store)
    with h5py.File(res.h5) as f:
        assert set(f) == {"features", "coords"}
        assert f["features"].shape == fs.features.shape and f["features"].dtype == np.float32
        assert f["coords"].dtype == np.int64 and np.array_equal(f["coords"][:], fs.coords)
        a = f["coords"].attrs
        assert a["patch_size"] == 224 and a["patch_level"] == 0 and a["patch_size_level0"] == 224
        assert list(a["level_dim"]) == [2220, 2967] and a["name"] == "CMU-1-Small-Region"


def test_a_missing_store_is_reported_and_others_go_on(cmu_tiles, tmp_path):
    results = extract_features([tmp_path / "nothing.zarr", cmu_tiles], tiny_encoder(), tmp_path, num_workers=0,
                               progress=False)
    assert [r.status for r in results] == ["failed", "extracted"]
    assert "no TileStore here" in results[0].error
    with pytest.raises(StoreError):
        FeatureStore.open(tmp_path / "nothing.zarr")


def test_cli_extract_and_encoders_list(cmu_tiles, tmp_path):
    tiles_dir = str(__import__("pathlib").Path(cmu_tiles).parent)
    proc = subprocess.run(
        [sys.executable, "-m", "pathweak_cli.main", "extract", tiles_dir, "--encoder", "timm:vit_tiny_patch16_224",
         "--weights", "random", "--out", str(tmp_path), "--export-h5", "--json", "--no-progress", "--workers", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["status"] == "extracted" and row["h5"].endswith(".h5")
    proc = subprocess.run([sys.executable, "-m", "pathweak_cli.main", "extract", tiles_dir, "--encoder",
                           "timm:vit_tiny_patch16_224", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "needs local weights" in proc.stderr and "Traceback" not in proc.stderr
    listing = subprocess.run([sys.executable, "-m", "pathweak_cli.main", "encoders", "list"], capture_output=True, text=True)
    assert listing.returncode == 0 and "torchvision:resnet50_trunc" in listing.stdout
