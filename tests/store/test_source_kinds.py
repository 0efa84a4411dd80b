"""Volume and image stores carry no made-up slide fields: consumers dispatch on the header's source kind
(the id, the tile extent, the features' geometry and the h5 export), and older stores that did carry them
are still read."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import BRAIN1, need_shared
from PIL import Image

from pathweak.config import StoreSpec, VolumeSpec
from pathweak.encoders import create_encoder
from pathweak.errors import ConfigError
from pathweak.features import FeatureStore, export_h5, extract_features
from pathweak.tiling import TileStore
from pathweak.tiling.images import images_to_store


@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"t{i}.png")
    files = sorted(folder.glob("*.png"))
    return images_to_store(files, folder.parent / "set_a.zarr", 32, StoreSpec(compression="lossless"), 0.5)


def _tiny():
    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=32, patch_size=16)


def test_image_store_has_no_slide_block_and_reads_by_its_source(image_store, tmp_path):
    ts = image_store
    assert ts.source == "images" and "slide" not in ts.attrs
    assert "level_downsample" not in ts.attrs["mpp"] and ts.attrs["mpp"]["achieved"] == [0.5, 0.5]
    assert ts.slide_id == "set_a" and ts.tile_extent == (32.0, 32.0)
    (res,) = extract_features([ts.path], _tiny(), tmp_path, num_workers=0, progress=False)
    fs = FeatureStore.open(res.store)
    geo = fs.attrs["geometry"]
    assert (geo["source"], geo["level"], geo["level_downsample"], geo["level_dim"]) == ("images", 0, [1.0, 1.0], None)
    with h5py.File(export_h5(fs, tmp_path / "a.h5"), "r") as f:
        assert f["features"].shape == (5, fs.features.shape[1])
        assert f["coords"].attrs["patch_level"] == 0 and "level_dim" not in f["coords"].attrs
        assert f["coords"].attrs["name"] == "set_a"


def test_volume_store_has_no_slide_or_mpp_block(tmp_path):
    need_shared(BRAIN1)
    from pathweak.volumes import tile_volume

    spec = VolumeSpec(spacing_mm=(4.0, 4.0, 4.0), patch_px=8, min_foreground=0.25)
    ts = TileStore.open(tile_volume(BRAIN1, tmp_path, spec, progress=False).store)
    assert ts.source == "volume" and "slide" not in ts.attrs and "mpp" not in ts.attrs
    assert ts.slide_id == BRAIN1.name.split(".")[0] == ts.attrs["source_id"]
    assert ts.attrs["volume"]["fingerprint"]["content_hash"] and ts.tile_extent == (8.0, 8.0)
    enc = create_encoder("monai:resnet10", weights="random:0", img_size=8)
    (res,) = extract_features([ts.path], enc, tmp_path, num_workers=0, progress=False)
    fs = FeatureStore.open(res.store)
    assert fs.attrs["geometry"]["spacing_mm"] == ts.attrs["volume"]["spacing"]
    with pytest.raises(ConfigError, match="3D volume patches"):
        export_h5(fs, tmp_path / "v.h5")
    assert not (tmp_path / "v.h5").exists()
    # a rerun is current: the fingerprint is found where the store now keeps it
    again = tile_volume(BRAIN1, tmp_path, spec, progress=False)
    assert again.status == "skipped"


def test_older_volume_and_image_stores_still_give_their_id(image_store, tmp_path):
    """Stores written before the store layer carried the id in a made-up slide block."""
    import shutil

    src = image_store.path
    old = tmp_path / "old.zarr"
    shutil.copytree(src, old)
    meta = json.loads((old / "zarr.json").read_text())
    attrs = meta["attributes"]
    attrs.pop("source_id")
    attrs["slide"] = {"slide_id": "legacy", "source": "images", "level_dimensions": [[32, 160]]}
    (old / "zarr.json").write_text(json.dumps(meta))
    ts = TileStore.open(old)
    assert ts.source == "images" and ts.slide_id == "legacy"
