"""Fixtures of the store-layer tests: one small real store of each kind, made once per module."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli as run_cli  # the one runner (tests/conftest.py), re-exported for this package


@pytest.fixture(scope="package")
def stores(svs, tmp_path_factory) -> dict[str, Path]:
    """A TileStore of the real CMU-1 crop (JPEG, 16-tile shards), its FeatureStore (a tiny random ViT)
    and a results store of its tiles."""
    from pathweak import StoreSpec
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.heatmap import write_results
    from pathweak.tiling import TileStore, tile_slide

    out = tmp_path_factory.mktemp("stores")
    tiles = Path(tile_slide(svs, out, store=StoreSpec(shard_tiles=16), progress=False).store)
    enc = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=112)
    (feat,) = extract_features([tiles], enc, out, num_workers=0, progress=False)
    with TileStore.open(tiles) as ts:
        n = len(ts)
        results = write_results(out / "results" / "r" / f"{ts.slide_id}.zarr", ts.coords,
                                {"attention": np.linspace(0, 1, n), "prob_tumor": np.linspace(1, 0, n)},
                                tile_store=tiles, slide_id=ts.slide_id)
    return {"tiles": tiles, "features": Path(feat.store), "results": results}


def copy_store(src: Path, dst_root: Path) -> Path:
    """A copy of a store under ``dst_root`` with the same folder name (so messages name the copy)."""
    dst = dst_root / src.name
    shutil.copytree(src, dst)
    return dst
