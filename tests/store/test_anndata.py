"""FeatureStore.to_anndata(): scverse's AnnData (``obsm["spatial"]``, as LazySlide uses) with the store's
features and coordinates, written to .h5ad and read back unchanged. anndata is an optional extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _feature_store(root: Path) -> Path:
    """A FeatureStore on disk in the format extraction writes: 12 tiles on a 4 x 3 grid, 8 features."""
    from pathweak.store import begin, commit
    from pathweak.store.features import create_feature_store

    final = root / "features" / "enc" / "slide_a.zarr"
    tmp = begin(final)
    coords = np.stack(np.meshgrid(np.arange(4) * 224 + 1000, np.arange(3) * 224 + 500), -1).reshape(-1, 2)
    attrs = {"cache_key": "k", "slide_id": "slide_a", "n_tiles": len(coords), "embed_dim": 8,
             "encoder": {"name": "x", "encoder_id": "enc", "embed_dim": 8, "extra": {}},
             "tile_store": {"path": "none", "cache_key": None}}  # fmt: skip
    arr = create_feature_store(tmp, len(coords), 8, coords, attrs)
    arr[...] = np.random.default_rng(0).normal(0, 1, (len(coords), 8)).astype(np.float16)
    commit(tmp, final, store=True)
    return final


def test_to_anndata_round_trips_coordinates_and_features(tmp_path: Path) -> None:
    anndata = pytest.importorskip("anndata", reason="anndata is an optional extra: pip install 'pathweak[anndata]'")
    import pathweak as pw

    store = pw.FeatureStore.open(_feature_store(tmp_path))
    adata = store.to_anndata()
    assert adata.shape == (12, 8)
    assert np.array_equal(adata.X, store.features.astype(np.float32))
    assert np.array_equal(adata.obsm["spatial"], store.coords)
    assert np.array_equal(adata.obsm["grid"], store.grid_positions())
    assert set(adata.obs["slide_id"]) == {"slide_a"}
    assert adata.uns["pathweak"]["encoder_id"] == "enc"
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = anndata.read_h5ad(tmp_path / "a.h5ad")
    assert np.array_equal(back.X, adata.X) and np.array_equal(back.obsm["spatial"], store.coords)
    assert list(back.obs_names) == list(adata.obs_names)


def test_to_anndata_without_anndata_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pathweak.errors import ConfigError
    from pathweak.store.features import FeatureStore

    store = FeatureStore.open(_feature_store(tmp_path))
    monkeypatch.setitem(sys.modules, "anndata", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the anndata package.*pathweak\[anndata\]"):
        store.to_anndata()
