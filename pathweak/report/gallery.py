"""Per-slide panels of the report: a large heatmap of a slide's per-tile score over its tissue, titled
with the slide id and where the scores come from, and a gallery of its highest- and lowest-scoring tiles
cut from the slide's TileStore (the lowest among tiles that are mostly tissue, so that they are not the
background edge tiles every slide has).

Scores come from the fold models that did not train on the slide (out-of-fold, :func:`fold_scores`), or
from a results store when those models cannot be applied (see report/slides.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import figures

HEATMAP_PX = 1200  # long side of a report heatmap (the slide's shape, plus title and colour bar)
TISSUE = 0.75  # the lowest-scoring tiles are chosen among tiles at least this much tissue


def display_score(task: str, classes: list[str] | None) -> str:
    """The per-tile score shown: the positive (last) class's probability, ``risk``, ``prob_positive`` or
    ``prediction``."""
    from ..train.run import safe_name

    if task == "survival":
        return "risk"
    if task == "proportion":
        return "prob_positive"
    if classes:
        return f"prob_{safe_name(classes[-1])}"
    return "prediction"


def sample_slides(frame: Any, column: str, n: int) -> list[str]:
    """Up to ``n`` slides of a predictions frame spread over the predicted score: highest, lowest, then
    evenly between."""
    ordered = frame.drop_duplicates("slide_id").sort_values(column, ascending=False)["slide_id"].tolist()
    if len(ordered) <= n:
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, n)).astype(int))
    return [ordered[i] for i in picks]


def fold_scores(run_dir: Path, model_folders: list[str], feature_store: Path) -> tuple[Any, Any]:
    """(ScoreTable, tile store path) of one slide from packaged models of a training run, averaged."""
    import torch

    from ..store.features import FeatureStore
    from ..store.results import ScoreTable
    from ..train.package import load_model
    from ..train.predict import ensemble

    models = [load_model(run_dir / "models" / name) for name in model_folders]
    store = FeatureStore.open(feature_store)
    x = torch.from_numpy(store.features)
    grid = torch.from_numpy(store.grid_positions())
    _, scores = ensemble(models, x, grid)
    return ScoreTable(store.coords, scores), store.attrs["tile_store"]["path"]


def slide_panel(ts: Any, score: str, out: Path, k: int = 6, title: str = "") -> dict[str, Any]:
    """Heatmap PNG and tile gallery PNG of one slide's ``TileScores``; returns their file names."""
    sid = ts.slide_id
    values = ts.scores[score]
    heat = heatmap_figure(ts, score, out / f"heatmap_{sid}.png", title or sid)
    finite = np.nonzero(np.isfinite(values))[0]
    order = finite[np.argsort(-values[finite], kind="stable")]
    k = min(k, max(1, len(order) // 2))
    top = order[:k]
    bottom, tissue = lowest_in_tissue(ts, order, k)
    tiles_top = ts.store.read_tiles(top) if len(top) else np.zeros((0, 1, 1, 3), np.uint8)
    tiles_bottom = ts.store.read_tiles(bottom) if len(bottom) else np.zeros((0, 1, 1, 3), np.uint8)
    gal = figures.tile_gallery(
        _rgb(tiles_top), values[top], _rgb(tiles_bottom), values[bottom], score, out / f"tiles_{sid}.png"
    )
    return {
        "slide_id": sid,
        "heatmap": heat.name,
        "gallery": gal.name,
        "tiles": len(finite),
        "mean": float(np.nanmean(values)) if len(finite) else float("nan"),
        "lowest_tissue": tissue,
    }


def tile_tissue(ts: Any, tile: np.ndarray) -> float:
    """The fraction of one tile's pixels that are tissue, by the pixel classifier its slide was tiled with
    (the TileStore's tissue mask is too coarse for this, and it fills holes in the tissue)."""
    from ..config import TissueSpec
    from ..tissue.methods import TISSUE_METHODS

    method = str((ts.store.attrs.get("tissue") or {}).get("method", "otsu_saturation"))
    if method not in TISSUE_METHODS:
        method = "otsu_saturation"
    return float(TISSUE_METHODS.get(method)(tile, TissueSpec(method=method)).mean())


def lowest_in_tissue(ts: Any, order: np.ndarray, k: int, batch: int = 24) -> tuple[np.ndarray, list[float]]:
    """The ``k`` lowest-scoring tiles (``order``: highest score first) among those at least
    :data:`TISSUE` tissue (:func:`tile_tissue`), read from the bottom up ``batch`` at a time and at most
    ``20 k`` tiles deep; where fewer qualify, the rest are the read tiles with the most tissue. Returns
    the tiles (lowest score first) and their tissue fractions."""
    ranked = [int(i) for i in order[::-1]]
    fraction: dict[int, float] = {}
    for start in range(0, min(len(ranked), 20 * k), batch):
        rows = ranked[start : start + batch]
        for i, tile in zip(rows, _rgb(ts.store.read_tiles(np.asarray(rows))), strict=True):
            fraction[i] = tile_tissue(ts, tile)
        if sum(f >= TISSUE for f in fraction.values()) >= k:
            break
    chosen = [i for i in fraction if fraction[i] >= TISSUE][:k]
    if len(chosen) < k:
        rest = sorted((i for i in fraction if i not in chosen), key=lambda i: -fraction[i])
        chosen = sorted(chosen + rest[: k - len(chosen)], key=ranked.index)
    return np.asarray(chosen, np.int64), [round(fraction[i], 3) for i in chosen]


def heatmap_figure(ts: Any, score: str, path: Path, title: str) -> Path:
    """:func:`overlay` of ``score`` as a PNG with ``title`` above and a colour bar."""
    image, values = overlay(ts, score)
    lo, hi = _scale(values, score)
    return figures.overlay_figure(image, title, score, lo, hi, path)


def overlay(ts: Any, score: str, alpha: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """The slide's tissue with the score's viridis colours over it at ``alpha`` (so the H&E shows through),
    :data:`HEATMAP_PX` pixels on the long side; pixels without a score are left as they are. Returns the
    RGB image and the score raster."""
    from ..heatmap.colormap import colorize
    from ..heatmap.stitch import stitch

    w0, h0 = ts.slide_size
    values = stitch(ts, score, downsample=max(w0, h0) / HEATMAP_PX, mask_tissue=True).values
    base = background(ts, values.shape).astype(np.float64)
    colour = colorize(values, "viridis", *_scale(values, score)).astype(np.float64)
    scored = np.isfinite(values)[..., None]
    return np.where(scored, base * (1 - alpha) + colour * alpha, base).round().astype(np.uint8), values


def _scale(values: np.ndarray, score: str) -> tuple[float, float]:
    from ..heatmap.colormap import value_range

    return value_range(values, None if score in ("risk", "prediction") else 0.0, None)


def background(ts: Any, shape: tuple[int, int]) -> np.ndarray:
    """The slide at ``shape`` (h, w): read from the slide file when it is still the one tiled (same size),
    else the TileStore's thumbnail scaled up."""
    import cv2

    h, w = shape
    slide = ts.store.attrs.get("slide", {})
    path = Path(slide.get("path", ""))
    size = (slide.get("fingerprint") or {}).get("size")
    if path.is_file() and size == path.stat().st_size:
        from ..errors import PathweakError
        from ..io import open_slide

        try:
            with open_slide(path) as s:
                thumb = s.get_thumbnail(max(h, w))
            return cv2.resize(thumb[..., :3], (w, h), interpolation=cv2.INTER_AREA)
        except (PathweakError, OSError):  # unreadable now: the store's own thumbnail still shows the tissue
            pass
    return cv2.resize(np.asarray(ts.store.thumbnail)[..., :3], (w, h), interpolation=cv2.INTER_CUBIC)


def _rgb(tiles: np.ndarray) -> np.ndarray:
    """Tiles as (k, H, W, 3) uint8 for display (grey tiles get three channels)."""
    if tiles.ndim == 3:
        tiles = tiles[..., None]
    return np.repeat(tiles, 3, axis=-1) if tiles.shape[-1] == 1 else tiles[..., :3]
