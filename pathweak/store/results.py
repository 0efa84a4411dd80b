"""Per-tile score tables on disk: the results store (Zarr v3) the heads write, and plain CSV.

Results store (format 1, see docs/results_format.md)::

    <name>.zarr/
      coords          int64 (N, 2)   level-0 top-left (x, y) of each tile, in the TileStore's order
      scores/<name>   float32 (N,)   one array per score (attention, probability, pseudo-label...)
      attrs: the store header (pathweak.store.header: kind="results", pathweak_format=1, complete,
             source, axes, rows, created, integrity), slide_id, tile_store (path)

CSV: a header row with ``x`` and ``y`` (level-0 top-left) and one column per score.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_file
from ..errors import ConfigError
from .build import building
from .header import header_attrs
from .open import damaged, open_store, read_array

FORMAT_VERSION = 1
KIND = "results"


@dataclass
class ScoreTable:
    """Scores of tiles named by their level-0 top-left ``coords``; ``tile_store`` and ``slide_id``
    are known when the table came from a results store."""

    coords: np.ndarray
    scores: dict[str, np.ndarray]
    tile_store: Path | None = None
    slide_id: str | None = None
    path: Path | None = None
    extent: tuple[float, float] | None = None  # level-0 (w, h) of each row's box when rows are not tiles (tokens)


def write_results(
    path: str | Path,
    coords: np.ndarray,
    scores: dict[str, np.ndarray],
    *,
    tile_store: str | Path,
    slide_id: str,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a results store at ``path`` atomically (temporary folder, then rename; an old store is
    replaced). ``scores`` maps names to (N,) arrays in the order of ``coords``."""
    import zarr

    path = Path(path)
    coords = np.asarray(coords, dtype=np.int64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ConfigError(
            f"coords must have shape (N, 2) for slides or (N, 3) for volumes, got {coords.shape}", path=path
        )
    table = _check_scores(scores, len(coords), path)
    from zarr.codecs import Crc32cCodec, ZstdCodec

    from .open import read_attrs

    checked: dict[str, Any] = {"compressors": (ZstdCodec(), Crc32cCodec()), "config": {"write_empty_chunks": True}}
    axes = "zyx" if coords.shape[1] == 3 else "xy"
    source = "volume" if axes == "zyx" else _source_of(read_attrs(Path(tile_store)), path)
    extra = dict(attrs or {})
    rows = "token" if extra.get("extent") is not None or extra.get("rows") == "token" else "tile"
    with building(path, store=True) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        group.create_array("coords", data=coords, chunks=(max(1, min(len(coords), 65536)), coords.shape[1]), **checked)
        sub = group.create_group("scores")
        for name, values in table.items():
            sub.create_array(name, data=values, chunks=(max(1, min(len(values), 65536)),), **checked)
        header = header_attrs(KIND, FORMAT_VERSION, source=source, axes=axes, rows=rows)
        group.attrs.update(
            {**header, "slide_id": slide_id, "tile_store": str(tile_store), **extra, "created": header["created"]}
        )
    return path


def _source_of(tile_store_attrs: dict[str, Any] | None, path: Path) -> str:
    from .header import source_of

    return source_of(tile_store_attrs) if tile_store_attrs else "slide"


def read_results(path: str | Path) -> ScoreTable:
    """Open a results store; a missing, incomplete or foreign one is a clear error."""
    path = Path(path)
    scores_dir = path / "scores"
    names = sorted(p.name for p in scores_dir.iterdir() if (p / "zarr.json").exists()) if scores_dir.is_dir() else []
    opened = open_store(path, KIND, ("coords", *(f"scores/{n}" for n in names)))
    if not names:
        raise damaged(path, KIND, "it has no scores")
    attrs = opened.attrs
    coords = read_array(path, "coords", KIND)
    scores = {name: read_array(path, f"scores/{name}", KIND) for name in names}
    tile_store = attrs.get("tile_store")
    if tile_store is not None:
        tile_store = Path(tile_store)
        if not tile_store.is_absolute():
            tile_store = path.parent / tile_store
    extent = attrs.get("extent")
    return ScoreTable(
        coords,
        _check_scores(scores, len(coords), path),
        tile_store,
        attrs.get("slide_id"),
        path,
        None if extent is None else (float(extent[0]), float(extent[1])),
    )


def write_scores_csv(path: str | Path, coords: np.ndarray, scores: dict[str, np.ndarray]) -> Path:
    """Write ``x,y,<score>...`` rows (scores with 9 significant digits, exact for float32; NaN as
    ``nan``) atomically."""
    path = Path(path)
    table = _check_scores(scores, len(coords), path)
    for name in table:
        if name in ("x", "y") or "," in name or '"' in name:
            raise ConfigError(f"score name {name!r} cannot be a CSV column", path=path, fix="rename the score")
    coords = np.asarray(coords, dtype=np.int64)
    columns = [coords[:, 0], coords[:, 1], *table.values()]
    fmt = ",".join(["%d", "%d"] + ["%.9g"] * len(table))
    with atomic_file(path, "w", newline="") as f:
        f.write(",".join(["x", "y", *table]) + "\n")
        for start in range(0, len(coords), 65536):
            rows = np.column_stack([c[start : start + 65536].astype(np.float64) for c in columns])
            np.savetxt(f, rows, fmt=fmt)
    return path


def read_scores_csv(path: str | Path) -> ScoreTable:
    """Read a CSV with ``x`` and ``y`` columns (level-0 top-left of each tile) and numeric score
    columns; other non-numeric columns (a slide id, say) are ignored."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ConfigError("score CSV not found", path=path, fix="check the path") from None
    except UnicodeDecodeError:
        raise ConfigError("not a text CSV file", path=path) from None
    if not rows or not {"x", "y"} <= {h.strip() for h in rows[0]}:
        raise ConfigError(
            "the CSV has no x and y columns",
            path=path,
            fix="write a header row with x, y (level-0 top-left of each tile) and score columns",
        )
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    if any(len(r) != len(header) for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) != len(header))
        raise ConfigError(f"row {bad + 2} has {len(body[bad])} fields, the header {len(header)}", path=path)
    cols = list(zip(*body, strict=False)) if body else [()] * len(header)
    coords = np.zeros((len(body), 2), np.int64)
    scores: dict[str, np.ndarray] = {}
    for name, values in zip(header, cols, strict=False):
        try:
            arr = np.array(values, dtype=np.float64)
        except ValueError:
            if name in ("x", "y"):
                raise ConfigError(f"column {name} is not numeric", path=path) from None
            continue  # a label column
        if name in ("x", "y"):
            if not np.array_equal(arr, np.round(arr)):
                raise ConfigError(f"column {name} holds non-integer pixel coordinates", path=path)
            coords[:, 0 if name == "x" else 1] = arr.astype(np.int64)
        else:
            scores[name] = arr
    if not scores:
        raise ConfigError("the CSV has no numeric score column", path=path, fix="add a column per score beside x and y")
    return ScoreTable(coords, _check_scores(scores, len(coords), path), path=path)


def _check_scores(scores: dict[str, np.ndarray], n: int, path: Path) -> dict[str, np.ndarray]:
    """Scores as float32 (N,) arrays with names that are usable keys; a wrong shape is a clear error."""
    if not scores:
        raise ConfigError("no scores given", path=path)
    out = {}
    for name, values in scores.items():
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ConfigError(f"score {name!r} has shape {arr.shape}, expected ({n},) (one value per tile)", path=path)
        if not name or "/" in name:
            raise ConfigError(f"score name {name!r} is empty or contains '/'", path=path)
        out[str(name)] = arr.astype(np.float32)
    return out
