"""One encoder's FeatureStore under construction for one TileStore: its rows, written in chunks under a
temporary name and swapped into place, and the attributes that say where its tiles lie."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _provenance
from ..errors import ConfigError, PathweakError
from ..protocols import TileEncoder
from ..store import begin, commit, discard
from ..store.features import CHUNK_ROWS, create_feature_store
from ..store.tiles import TileStore


class FeatureWriter:
    """One encoder's FeatureStore under construction for one TileStore (written under a temporary name)."""

    def __init__(self, tile_store: TileStore, enc: TileEncoder, out_dir: str | Path, key: str, final: Path):
        from .tokens import TokenRows

        self.enc, self.final, self.tmp = enc, final, begin(final)
        n, dim = len(tile_store), enc.embed_dim
        coords, grid, attrs = tile_store.coords, None, _attrs(tile_store, enc, key)
        if isinstance(enc, TokenRows):  # h x w rows per tile
            if tile_store.is_volume:
                raise ConfigError(
                    "token rows are for slide tiles, not volume patches",
                    path=tile_store.path,
                    fix="extract volume patches without --tokens",
                )
            grid, coords, cell = enc.layout(tile_store.grid_index, tile_store.coords, tile_store.tile_extent)
            n = len(coords)
            attrs.update(
                n_tiles=n,
                tokens={"pool": enc.pool, "map": list(enc.map_shape), "extent": list(cell), "tiles": len(tile_store)},
            )
        if "views" in enc.info.extra:  # rotation views side by side (features/views.py)
            attrs["views"] = enc.info.extra["views"]
        self.n = n
        self.feats = create_feature_store(self.tmp, n, dim, coords, attrs, grid=grid, source=tile_store.source)
        self.buffer = np.empty((min(CHUNK_ROWS, max(n, 1)), dim), np.float16)
        self.filled, self.row0 = 0, 0

    def add(self, out: np.ndarray) -> None:
        pos = 0
        while pos < len(out):
            take = min(len(out) - pos, len(self.buffer) - self.filled)
            self.buffer[self.filled : self.filled + take] = out[pos : pos + take]
            self.filled, pos = self.filled + take, pos + take
            if self.filled == len(self.buffer) or self.row0 + self.filled == self.n:
                self.feats[self.row0 : self.row0 + self.filled] = self.buffer[: self.filled]
                self.row0, self.filled = self.row0 + self.filled, 0

    def finish(self, where: Path) -> None:
        if self.row0 != self.n:
            raise PathweakError(f"embedded {self.row0} of {self.n} rows", path=where)
        commit(self.tmp, self.final, store=True)

    def abort(self) -> None:
        discard(self.tmp)


def _attrs(tile_store: TileStore, enc: TileEncoder, key: str) -> dict[str, Any]:
    ta = tile_store.attrs
    return {
        "cache_key": key,
        "slide_id": tile_store.slide_id,
        "n_tiles": len(tile_store),
        "embed_dim": enc.embed_dim,
        "encoder": enc.info.as_dict(),
        "tile_store": {"path": str(Path(tile_store.path).resolve()), "cache_key": ta.get("cache_key")},
        "geometry": _geometry(tile_store),
        "versions": _provenance.versions("torch", "timm", "zarr"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _geometry(tile_store: TileStore) -> dict[str, Any]:
    """Where the features' tiles lie, by the TileStore's source kind: a slide's pyramid level and µm/px (what
    the h5 export writes for CLAM and TRIDENT), images read as they are, or a volume's voxel spacing."""
    ta = tile_store.attrs
    common = {"source": tile_store.source, "patch_px": ta["tile"]["patch_px"], "read_px": ta["tile"]["read_px"]}
    if tile_store.source == "volume":
        return {**common, "spacing_mm": ta["volume"]["spacing"]}
    mpp = ta.get("mpp") or {}
    if tile_store.source == "images":  # separate images at their own scale: level 0, no downsampling
        return {
            **common,
            "level": 0,
            "level_downsample": [1.0, 1.0],
            "target_mpp": mpp.get("target"),
            "achieved_mpp": mpp.get("achieved"),
            "level_dim": None,
            "slide_path": None,
        }
    return {
        **common,
        "level": mpp["level"],
        "level_downsample": mpp["level_downsample"],
        "target_mpp": mpp["target"],
        "achieved_mpp": mpp["achieved"],
        "level_dim": ta["slide"]["level_dimensions"][mpp["level"]],
        "slide_path": ta["slide"]["path"],
    }
