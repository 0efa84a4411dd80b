"""Per-tile scores tied to their TileStore: the geometry every heatmap and export starts from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError, UnsupportedSlideError
from ..store.header import read_header
from ..store.open import read_attrs
from ..store.results import ScoreTable, read_results, read_scores_csv
from ..store.tiles import TileStore


@dataclass
class TileScores:
    """Scores of the tiles of one TileStore, in the store's order (NaN: no score for that tile).

    ``extent`` is the level-0 size (x, y) of a tile: ``read_px`` times the downsample of the level read.
    """

    coords: np.ndarray
    scores: dict[str, np.ndarray]
    extent: tuple[float, float]
    slide_size: tuple[int, int]
    mpp: tuple[float, float]
    slide_id: str
    store: TileStore
    source: Path | None = None  # the results store or CSV the scores were read from (None: given in memory)

    def boxes(self, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Level-0 boxes (x0, y0, x1, y1) of the tiles (of ``rows`` of them), clipped to the slide."""
        x0 = self.coords[rows, 0].astype(np.float64)
        y0 = self.coords[rows, 1].astype(np.float64)
        w, h = self.slide_size
        return x0, y0, np.minimum(x0 + self.extent[0], w), np.minimum(y0 + self.extent[1], h)

    def pick(self, names: list[str] | None, option: str = "--score") -> dict[str, np.ndarray]:
        """The named scores (all when ``names`` is empty); an unknown name is a clear error naming the
        scores' own file (the results store or CSV, else the TileStore) and the ``option`` that named it."""
        if not names:
            return dict(self.scores)
        missing = [n for n in names if n not in self.scores]
        if missing:
            raise ConfigError(
                f"no score named {', '.join(missing)} (the scores are: {', '.join(self.scores)})",
                path=self.source or self.store.path,
                fix=f"name one of those in {option}",
            )
        return {n: self.scores[n] for n in names}


def tile_scores(store: TileStore | str | Path, table: ScoreTable | dict[str, np.ndarray]) -> TileScores:
    """Tie scores to a TileStore. A dict is taken to be in the store's order; a :class:`ScoreTable` is
    matched to the store's tiles by coordinates (tiles without a score get NaN), unless it has its own
    ``extent`` (rows that are boxes inside tiles, e.g. token maps), whose rows are kept as they are."""
    if not isinstance(store, TileStore):
        store = open_tile_store(store)
    _check_slide_store(store.attrs, store.path)
    n = len(store)
    if isinstance(table, dict):
        table = ScoreTable(store.coords, table)
    coords = np.asarray(table.coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        refuse_volume({}, coords, table.path)
        raise ConfigError(f"score coordinates have shape {coords.shape}, not (N, 2)", path=table.path)
    attrs = store.attrs
    rows, extent = store.coords, store.tile_extent
    if table.extent is not None:  # rows are boxes inside tiles (token maps): they keep their own coords
        rows, extent, n = coords, table.extent, len(coords)
        scores = {k: np.asarray(v, np.float32) for k, v in table.scores.items()}
    elif coords.shape == store.coords.shape and np.array_equal(coords, store.coords):
        scores = {k: np.asarray(v, np.float32) for k, v in table.scores.items()}
    else:
        order = _match(store.coords, coords, table.path, store.path)
        scores = {}
        for name, values in table.scores.items():
            full = np.full(n, np.nan, np.float32)
            full[order] = values
            scores[name] = full
    for name, values in scores.items():
        if values.shape != (n,):
            raise ConfigError(
                f"score {name!r} has {values.shape[0]} values for {n} tiles", path=table.path or store.path
            )
    return TileScores(
        coords=rows,
        scores=scores,
        extent=extent,
        slide_size=tuple(int(v) for v in attrs["slide"]["dimensions"]),  # type: ignore[arg-type]
        mpp=tuple(float(v) for v in attrs["mpp"]["level0"]),  # type: ignore[arg-type]
        slide_id=store.slide_id,
        store=store,
    )


def load_scores(source: str | Path, store: str | Path | None = None) -> TileScores:
    """Scores from a results store (which names its TileStore) or a CSV with x, y and score columns
    (``store`` required); ``store`` overrides the TileStore a results store names."""
    source = Path(source)
    if not source.exists():
        raise ConfigError(
            "scores not found", path=source, fix="pass a results store (.zarr) or a CSV with x, y and scores"
        )
    if source.is_dir():
        refuse_volume(read_attrs(source) or {}, None, source)
        table = read_results(source)
    else:
        table = read_scores_csv(source)
    tile_store = Path(store) if store is not None else table.tile_store
    if tile_store is None:
        raise ConfigError(
            "a score CSV does not say which TileStore its tiles come from",
            path=source,
            fix="pass --store <out>/tiles/<slide_id>.zarr",
        )
    ts = tile_scores(open_tile_store(tile_store), table)
    ts.source = source
    return ts


def open_tile_store(path: str | Path) -> TileStore:
    """Open a TileStore for exports; a volume store is sent to the volume exports (not here yet)."""
    attrs = read_attrs(Path(path))
    if attrs is not None:
        _check_slide_store(attrs, path)
    return TileStore.open(path)


def _check_slide_store(attrs: dict[str, Any], path: str | Path) -> None:
    """Exports need the tiles of a 2D slide: not a volume, not a store of separate images."""
    refuse_volume(attrs, None, path)
    if read_header(attrs).source == "images":
        raise ConfigError(
            "this TileStore holds separate images, not the tiles of a slide, so there is no slide to lay scores on",
            path=path,
            fix="use the TileStore of a tiled slide",
        )


def refuse_volume(attrs: dict[str, Any], coords: np.ndarray | None, path: str | Path | None) -> None:
    """The dispatch point for 3D volumes: their score maps are NIfTI volumes with the source affine,
    written by :func:`pathweak.volumes.scores_to_nifti`, not slide rasters or QuPath objects."""
    columns = coords.shape[1] if coords is not None and coords.ndim == 2 else None
    if read_header(attrs, columns).source == "volume":
        raise UnsupportedSlideError(
            "heatmaps and QuPath exports are for 2D slides; this is a 3D volume store",
            path=path,
            fix="write a NIfTI heatmap: pathweak export RESULTS -f nifti -o heat.nii.gz (Python: pathweak.volumes.results_to_nifti)",
        )


def _match(store_coords: np.ndarray, coords: np.ndarray, path: Path | None, store_path: Path) -> np.ndarray:
    """Index into the store of each scored tile, matched by level-0 (x, y)."""

    def keys(c: np.ndarray) -> np.ndarray:
        return (c[:, 0].astype(np.int64) << 32) | (c[:, 1].astype(np.int64) & 0xFFFFFFFF)

    skeys, ckeys = keys(store_coords), keys(coords)
    if len(np.unique(ckeys)) != len(ckeys):
        raise ConfigError("the scores list a tile (x, y) more than once", path=path, fix="keep one row per tile")
    order = np.argsort(skeys)
    pos = np.clip(np.searchsorted(skeys, ckeys, sorter=order), 0, max(len(skeys) - 1, 0))
    found = skeys[order[pos]] == ckeys if len(skeys) else np.zeros(len(ckeys), bool)
    if not found.all():
        x, y = coords[np.argmin(found)]
        raise StoreError(
            f"{int((~found).sum())} scored tiles are not tiles of {store_path} (first: x={x}, y={y})",
            path=path,
            fix="use the TileStore the scores were computed from (--store)",
        )
    return order[pos]
