"""Per-slide panels of the report: the heatmap PNG of a slide's per-tile score (the heatmap stage's own
PNG export over the thumbnail) next to a gallery of its highest- and lowest-scoring tiles, cut from the
slide's TileStore.

Scores come from the cohort's results store when there is one (``results/<head>/<slide>.zarr``), else
from the run's packaged model for the fold in which the slide was a test slide (out-of-fold, as in the
predictions), applied to the slide's FeatureStore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import figures


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


def fold_scores(run_dir: Path, model_folder: str, feature_store: Path) -> tuple[Any, Any]:
    """(ScoreTable, tile store path) of one slide from one packaged model of a training run."""
    import torch

    from ..features.store import FeatureStore
    from ..heatmap.results import ScoreTable
    from ..train.package import load_model
    from ..train.predict import ensemble

    model = load_model(run_dir / "models" / model_folder)
    store = FeatureStore.open(feature_store)
    x = torch.from_numpy(store.features)
    grid = torch.from_numpy(store.grid_positions())
    _, scores = ensemble([model], x, grid)
    return ScoreTable(store.coords, scores), store.attrs["tile_store"]["path"]


def slide_panel(ts: Any, score: str, out: Path, k: int = 6) -> dict[str, Any]:
    """Heatmap PNG and tile gallery PNG of one slide's ``TileScores``; returns their file names."""
    from ..heatmap import ExportOptions, export

    sid = ts.slide_id
    values = ts.scores[score]
    options = ExportOptions(
        scores=(score,),
        vmin=None if score in ("risk", "prediction") else 0.0,
        vmax=None if score in ("risk", "prediction") else 1.0,
    )
    heat = export(ts, "png", out / f"heatmap_{sid}.png", options)
    finite = np.nonzero(np.isfinite(values))[0]
    order = finite[np.argsort(-values[finite], kind="stable")]
    k = min(k, max(1, len(order) // 2))
    top, bottom = order[:k], order[::-1][:k]
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
    }


def _rgb(tiles: np.ndarray) -> np.ndarray:
    """Tiles as (k, H, W, 3) uint8 for display (grey tiles get three channels)."""
    if tiles.ndim == 3:
        tiles = tiles[..., None]
    return np.repeat(tiles, 3, axis=-1) if tiles.shape[-1] == 1 else tiles[..., :3]
