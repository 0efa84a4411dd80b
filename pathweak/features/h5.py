"""Export of FeatureStores to the h5 layout CLAM and TRIDENT read (``features`` + ``coords``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store.features import FeatureStore


def export_h5(store: FeatureStore, out_path: str | Path) -> Path:
    """Write ``features`` (N, D) float32 and ``coords`` (N, 2) int64 level-0 (x, y) to an h5 file.

    ``coords`` carries the attributes CLAM and TRIDENT use: ``patch_size`` (px at the read level),
    ``patch_level``, ``downsample`` (of that level), ``downsampled_level_dim``, ``level_dim``,
    ``patch_size_level0``, ``target_mpp`` and ``name`` (the slide id). The file appears atomically.
    """
    import h5py

    from .._atomic import atomic_path
    from ..errors import ConfigError

    out_path = Path(out_path)
    geo = store.attrs["geometry"]
    if geo.get("source") == "volume":
        raise ConfigError(
            "the h5 layout CLAM and TRIDENT read is for 2D tiles; these are features of 3D volume patches",
            path=store.path,
            fix="read the FeatureStore itself (pathweak.features.FeatureStore.open)",
        )
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=store.features.astype(np.float32))
            coords = f.create_dataset("coords", data=store.coords.astype(np.int64))
            coords.attrs["patch_size"] = int(geo["read_px"])
            coords.attrs["patch_level"] = int(geo["level"])
            coords.attrs["downsample"] = np.asarray(geo["level_downsample"], dtype=np.float64)
            if geo["level_dim"] is not None:  # separate images have no slide level
                coords.attrs["downsampled_level_dim"] = np.asarray(geo["level_dim"], dtype=np.int64)
                coords.attrs["level_dim"] = np.asarray(geo["level_dim"], dtype=np.int64)
            coords.attrs["patch_size_level0"] = int(round(geo["read_px"] * geo["level_downsample"][0]))
            if geo["target_mpp"] is not None:
                coords.attrs["target_mpp"] = float(geo["target_mpp"])
            coords.attrs["name"] = store.slide_id
            f.attrs["encoder"] = store.encoder_id
            f.attrs["pathweak_feature_store"] = str(store.path)
    return out_path
