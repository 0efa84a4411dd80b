"""FeatureStore: the embeddings of one slide's tiles by one encoder (a Zarr v3 group).

Layout (format 1), at ``<out>/features/<encoder_id>/<slide_id>.zarr``::

    features  float16 (N, D), chunks (4096, D)   row i = tile i of the TileStore (or one token of a tile)
    coords    int64 (N, 2)                        level-0 top-left (x, y), copied from the TileStore
                                                  ((N, 3) (z, y, x) for volume patches)
    grid      int32 (N, 2), optional              token rows' cells on the slide's token grid
    attrs: the store header (pathweak.store.header: kind="features", pathweak_format, complete,
           cache_key, source, axes, rows, created, integrity), slide_id, n_tiles, embed_dim,
           encoder {name, encoder_id, embed_dim, img_size, mean, std, precision, weights, weights_hash},
           tile_store {path, cache_key}, geometry (patch size, level, downsample, mpp: for exports),
           tokens {pool, map, extent, tiles} (token rows only), views {kind, count, angles, dim} (rows of
           rotation views side by side: features/views.py), versions, created
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from .header import StoreHeader, header_attrs
from .open import find_stores, open_store, read_array, read_attrs

FORMAT_VERSION = 1
KIND = "features"
CHUNK_ROWS = 4096


def feature_store_path(out_dir: str | Path, encoder_id: str, slide_id: str) -> Path:
    return Path(out_dir) / "features" / encoder_id / f"{slide_id}.zarr"


def find_feature_stores(inputs: list[str | Path]) -> list[Path]:
    """FeatureStores named directly, found in folders or by glob. A ``features/`` folder holding the
    stores of a single encoder (``features/<encoder_id>/``) is searched too; with several encoders there
    the choice is the user's."""
    expanded: list[str | Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not (p / "zarr.json").exists() and not any(p.glob("*.zarr")):
            encoders = sorted(c for c in p.iterdir() if c.is_dir() and any(c.glob("*.zarr")))
            if len(encoders) > 1:
                raise StoreError(
                    f"features of {len(encoders)} encoders here ({', '.join(c.name for c in encoders)})",
                    path=p,
                    fix="pass the folder of one encoder, e.g. " + str(encoders[0]),
                )
            expanded.extend(encoders or [p])
        else:
            expanded.append(item)
    return find_stores(
        expanded,
        KIND,
        "FeatureStore",
        "pass <slide>.zarr FeatureStores or a features/<encoder_id>/ folder",
        "run `pathweak extract` first",
    )


def create_feature_store(
    path: Path,
    n: int,
    dim: int,
    coords: np.ndarray,
    attrs: dict[str, Any],
    grid: np.ndarray | None = None,
    source: str = "slide",
) -> Any:
    """Create the group with an empty ``features`` array; returns that array for chunked writes.
    ``grid`` (N, 2) int32 stores the rows' grid positions when coords alone cannot give them (token rows
    inside tiles); without it readers derive them from coords. ``source`` is the TileStore's source kind
    (the header's); rows are tokens when ``attrs`` has ``tokens``. Every chunk carries a CRC32C."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    checked: dict[str, Any] = {"compressors": (ZstdCodec(), Crc32cCodec()), "config": {"write_empty_chunks": True}}
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    feats = group.create_array(
        "features",
        shape=(n, dim),
        dtype="float16",
        chunks=(max(1, min(CHUNK_ROWS, n)), dim),
        dimension_names=("tile", "feature"),
        **checked,
    )
    c = group.create_array(
        "coords", shape=coords.shape, dtype="int64", chunks=(max(1, len(coords)), coords.shape[1]), **checked
    )
    if len(coords):
        c[...] = coords
    if grid is not None:
        g = group.create_array(
            "grid", shape=grid.shape, dtype="int32", chunks=(max(1, len(grid)), grid.shape[1]), **checked
        )
        if len(grid):
            g[...] = grid.astype(np.int32)
    axes = "zyx" if coords.ndim == 2 and coords.shape[1] == 3 else "xy"
    header = header_attrs(
        KIND,
        FORMAT_VERSION,
        source="volume" if axes == "zyx" else source,
        axes=axes,
        rows="token" if "tokens" in attrs else ("slide" if "slide_embedding" in attrs else "tile"),
        cache_key=attrs.get("cache_key"),
    )
    group.attrs.update({**header, **attrs, "created": header["created"]})
    return feats


class FeatureStore:
    """A finished FeatureStore, opened for reading."""

    def __init__(self, path: Path, attrs: dict[str, Any]):
        self.path = path
        self.attrs = attrs

    header: StoreHeader

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        """Open a finished FeatureStore; a missing, incomplete, foreign, newer-format or damaged one
        (arrays of other lengths, a missing chunk file) is a clear :class:`StoreError` naming the store."""
        attrs = read_attrs(Path(path)) or {}
        n = attrs.get("n_tiles")
        arrays = ("features", "coords", *(("grid",) if (Path(path) / "grid" / "zarr.json").exists() else ()))
        opened = open_store(path, KIND, arrays, rows={"n_tiles": int(n)} if isinstance(n, int) else None)
        store = cls(opened.path, opened.attrs)
        store.header = opened.header
        return store

    @cached_property
    def features(self) -> np.ndarray:
        """All features as float16 (N, D)."""
        return read_array(self.path, "features", KIND)

    @cached_property
    def coords(self) -> np.ndarray:
        return read_array(self.path, "coords", KIND)

    def grid_positions(self) -> np.ndarray:
        """Grid position of each row, int32: the stored ``grid`` (token rows), else derived from coords
        (:func:`grid_positions`)."""
        if (self.path / "grid" / "zarr.json").exists():
            return read_array(self.path, "grid", KIND).astype(np.int32)
        return grid_positions(self.coords)

    @property
    def coord_dims(self) -> int:
        """2 for slide tiles' (x, y) coords, 3 for volume patches' (z, y, x) (read from metadata only)."""
        from .open import array_meta

        return int(array_meta(self.path, "coords", KIND)["shape"][1])

    @property
    def slide_id(self) -> str:
        return str(self.attrs["slide_id"])

    @property
    def embed_dim(self) -> int:
        return int(self.attrs["embed_dim"])

    @property
    def encoder_id(self) -> str:
        return str(self.attrs["encoder"]["encoder_id"])

    def __len__(self) -> int:
        return int(self.attrs["n_tiles"])

    def to_anndata(self) -> Any:
        """The store as an ``anndata.AnnData`` (scverse's convention, as LazySlide uses): ``X`` the features
        (float32, one row per tile), ``obsm["spatial"]`` the coordinates (level-0 (x, y) of a slide's tiles,
        (z, y, x) of a volume's patches), ``obsm["grid"]`` the grid positions, ``obs["slide_id"]``, and
        ``uns["pathweak"]`` the slide, encoder and store. Needs the optional ``anndata`` package
        (``pip install 'pathweak[anndata]'``)."""
        try:
            import anndata
        except ModuleNotFoundError:
            raise ConfigError(
                "FeatureStore.to_anndata needs the anndata package, which is not installed",
                path=self.path,
                fix="pip install 'pathweak[anndata]'",
            ) from None
        import pandas as pd

        names = pd.Index([f"{self.slide_id}:{i}" for i in range(len(self))], dtype=object)  # object: h5ad-writable
        slide = pd.Categorical([self.slide_id] * len(self), categories=pd.Index([self.slide_id], dtype=object))
        obs = pd.DataFrame({"slide_id": slide}, index=names)
        return anndata.AnnData(
            X=self.features.astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=pd.Index([f"feature_{j}" for j in range(self.embed_dim)], dtype=object)),
            obsm={"spatial": np.asarray(self.coords), "grid": self.grid_positions()},
            uns={"pathweak": {"slide_id": self.slide_id, "encoder_id": self.encoder_id, "store": str(self.path)}},
        )

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, tiles={len(self)}, dim={self.embed_dim})"


def grid_positions(coords: np.ndarray) -> np.ndarray:
    """Positions of tiles on their grid, int32: (row, col) from slides' level-0 top-left (x, y) coords, or
    (z, y, x) indices from volume patches' (z, y, x) coords. The step along each axis is the smallest gap
    between distinct coordinates (a single row, column or slice gets step 1)."""
    coords = np.asarray(coords, np.int64)
    volume = coords.ndim == 2 and coords.shape[1] == 3
    axes = ((0, 0), (1, 1), (2, 2)) if volume else ((0, 1), (1, 0))  # slides: x -> column, y -> row
    out = np.zeros((len(coords), len(axes)), np.int32)
    for axis, col in axes:
        values = coords[:, axis]
        if len(values) == 0:
            continue
        distinct = np.unique(values)
        step = int(np.diff(distinct).min()) if len(distinct) > 1 else 1
        out[:, col] = np.rint((values - distinct[0]) / step).astype(np.int32)
    return out
