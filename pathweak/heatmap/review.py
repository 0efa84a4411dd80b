"""``export_review``: pseudo-labels out to QuPath, ready to review (docs/review.md). One GeoJSON per slide,
``<out>/<slide_id>.geojson`` (the name QuPath's own export gives it back, so corrections match by name):

- every tile a ``detection`` classified with the class the model gives it (INS's pseudo-label, else the
  thresholded mask, else the most likely class; QuPath's colours for its own class names), with its
  scores, ``review priority`` and the exported class index (``pathweak class [...]``) as measurements;
- the review queue: the ``queue`` tiles of highest priority (heatmap/review_queue.py) as ``annotation``
  objects of class ``Review`` named ``review <rank>``, with ``rank`` and ``priority`` measurements.

From a training run (or a cohort run's folder) every labelled slide is scored by the models that held it
out (out-of-fold, averaged over seeds), so its queue reflects what the model does not know; its label is
known, so a mis-predicted slide's high-attention tiles join the queue. From a folder of results stores
(``pathweak predict``) the stores' scores are used as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..progress import progress_bar
from .geojson import FeatureCollectionWriter, feature, tile_features, uuid4_strings
from .review_files import exported_class_key
from .review_queue import SlideReview, class_probabilities, review_slide
from .source import TileScores

REVIEW = ("Review", (255, 0, 255))  # the queue's class: magenta, no QuPath default uses it
QUPATH_COLOURS = {  # QuPath's built-in classes (qupath-core PathClass, 0.5)
    "tumor": (200, 0, 0),
    "stroma": (150, 200, 150),
    "immune cells": (160, 90, 160),
    "necrosis": (50, 50, 50),
    "other": (255, 200, 0),
    "region*": (0, 0, 180),
    "ignore*": (180, 180, 180),
    "positive": (200, 50, 50),
    "negative": (90, 90, 180),
}
OTHERS = ((200, 0, 0), (0, 150, 0), (200, 150, 0), (150, 0, 200), (0, 150, 200), (120, 60, 0))


@dataclass
class ReviewFile:
    """One slide's review export."""

    slide_id: str
    path: Path
    tiles: int
    queue: list[int]  # tile indices (the TileStore's rows), highest priority first
    predicted: str | None
    label: str | None


@dataclass
class _Slide:
    ts: TileScores
    classes: list[str]
    negative: int
    predicted: str | None
    label: str | None


def export_review(
    source: str | Path,
    out_dir: str | Path | None = None,
    queue: int = 20,
    *,
    seed: int | None = None,
    progress: bool = False,
) -> list[ReviewFile]:
    """Write the review GeoJSON of every slide of ``source`` (a training run, a cohort run folder, a folder of
    results stores or one results store) into ``out_dir`` (default ``<source>/review``); ``queue`` tiles per
    slide go into the review queue; ``seed`` makes the object ids reproducible."""
    if queue < 0:
        raise ConfigError(f"the queue size must be >= 0, got {queue}", fix="e.g. --queue 20")
    source = Path(source)
    slides = _slides(source)
    out = Path(out_dir) if out_dir is not None else (source if source.is_dir() else source.parent) / "review"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed) if seed is not None else None
    written = []
    with progress_bar(len(slides), "review export", progress, unit="slides") as advance:
        for slide in slides:
            written.append(write_review(slide, out / f"{slide.ts.slide_id}.geojson", queue, rng))
            advance(1)
    return written


def slide_review(
    ts: TileScores, classes: list[str], negative: int, queue: int, mispredicted: bool = False
) -> SlideReview:
    """The review (shown classes, priorities, queue) of one slide's scores."""
    from ..train.columns import safe_name

    prob = class_probabilities(ts.scores, [f"prob_{safe_name(c)}" for c in classes])
    return review_slide(
        prob,
        negative,
        queue,
        attention=ts.scores.get("attention"),
        pseudo_label=ts.scores.get("pseudo_label"),
        mask=ts.scores.get("mask"),
        mispredicted=mispredicted,
    )


def write_review(slide: _Slide, path: Path, queue: int, rng: np.random.Generator | None = None) -> ReviewFile:
    """One slide's review GeoJSON (see the module docstring)."""
    ts, classes = slide.ts, slide.classes
    mispredicted = slide.label is not None and slide.predicted is not None and slide.label != slide.predicted
    review = slide_review(ts, classes, slide.negative, queue, mispredicted)
    colours = class_colours(classes, slide.negative)
    measures = {
        **ts.scores,
        "review priority": review.priority.astype(np.float32),
        exported_class_key(classes): review.classes.astype(np.float32),
    }
    x0, y0, x1, y1 = ts.boxes()
    ids = uuid4_strings(len(review.queue), rng)
    import shapely

    with FeatureCollectionWriter(path) as fc:
        fc.write(
            [
                feature(
                    shapely.box(x0[t], y0[t], x1[t], y1[t]),
                    "annotation",
                    id=ids[rank],
                    classification=REVIEW,
                    name=f"review {rank + 1}",
                    measurements={"rank": rank + 1, "priority": float(review.priority[t])},
                )
                for rank, t in enumerate(review.queue.tolist())
            ]
        )
        for lines in tile_features(
            ts, measures, rng, classes=(review.classes, list(zip(classes, colours, strict=True)))
        ):
            fc.write(lines)
    return ReviewFile(ts.slide_id, path, len(ts.coords), review.queue.tolist(), slide.predicted, slide.label)


def class_colours(classes: list[str], negative: int) -> list[tuple[int, int, int]]:
    """QuPath's colour for its own class names (Tumor, Stroma, ...); else blue-grey for the negative class and
    distinct colours for the others."""
    out, others = [], iter(OTHERS * (len(classes) // len(OTHERS) + 1))
    for i, c in enumerate(classes):
        known = QUPATH_COLOURS.get(c.casefold())
        out.append(known if known else QUPATH_COLOURS["negative"] if i == negative else next(others))
    return out


# -- sources ------------------------------------------------------------------------------------------------------


def _slides(source: Path) -> list[_Slide]:
    if (source / "summary.json").is_file() and not (source / "run.json").is_file():
        model = json.loads((source / "summary.json").read_text()).get("where", {}).get("model")
        if not model or not (Path(model) / "run.json").is_file():
            raise ConfigError("this cohort run has no trained model", path=source, fix="run its train stage first")
        source = Path(model)
    if (source / "run.json").is_file():
        return _run_slides(source)
    stores = [source] if (source / "zarr.json").exists() else sorted(source.glob("*.zarr"))
    if not stores:
        raise ConfigError(
            "not a training run, cohort run or results store(s)",
            path=source,
            fix="pass the folder of `pathweak train -o RUN`, a cohort's out folder or a `pathweak predict` results folder",
        )
    return [_results_slide(p) for p in stores]


def _results_slide(path: Path) -> _Slide:
    from ..store.open import read_attrs
    from .source import load_scores

    ts = load_scores(path)
    attrs = read_attrs(path) or {}
    classes = (attrs.get("model") or {}).get("classes")
    if not classes:
        raise ConfigError(
            "the results store names no classes (a regression, survival or proportion model?)",
            path=path,
            fix="review exports need a classification model's results",
        )
    return _Slide(ts, list(classes), 0, attrs.get("predicted"), None)


def _run_slides(run: Path) -> list[_Slide]:
    """Each of a training run's slides scored by the models that held it out (all models for the others)."""
    import pandas as pd
    import torch

    from ..store.features import FeatureStore
    from ..store.results import ScoreTable
    from ..train.package import load_model
    from ..train.predict import ensemble
    from .source import open_tile_store, tile_scores

    summary = json.loads((run / "run.json").read_text())
    classes = summary.get("classes")
    if not classes:
        raise ConfigError(
            f"a {summary.get('task')} run has no classes to review", path=run, fix="review a classification run"
        )
    stores = summary.get("feature_stores") or {}
    if not stores:
        raise ConfigError(
            "run.json records no feature stores (a run of an older pathweak)", path=run, fix="train it again"
        )
    negative = int((summary.get("config") or {}).get("head_options", {}).get("negative_class", 0))
    pred = pd.read_csv(run / "predictions.csv", dtype={"slide_id": str})
    cache: dict[str, Any] = {}

    def model(name: str) -> Any:
        if name not in cache:
            cache[name] = load_model(run / "models" / name)
        return cache[name]

    every = sorted(p.parent.name for p in run.glob("models/*/model.json"))
    out = []
    for sid, where in stores.items():
        rows = pred[pred["slide_id"] == sid]
        names = [f"seed{int(r.seed)}_fold{int(r.fold)}" for r in rows.itertuples()] or every
        fs = FeatureStore.open(where)
        x = torch.from_numpy(fs.features)
        _, scores = ensemble([model(n) for n in names], x, torch.from_numpy(fs.grid_positions()))
        tokens = fs.attrs.get("tokens")
        extent = (float(tokens["extent"][0]), float(tokens["extent"][1])) if tokens else None
        ts = tile_scores(open_tile_store(fs.attrs["tile_store"]["path"]), ScoreTable(fs.coords, scores, extent=extent))
        first = rows[rows["seed"] == rows["seed"].min()] if len(rows) else rows
        label = str(first["label"].iloc[0]) if len(first) and "label" in first else None
        predicted = str(first["predicted"].iloc[0]) if len(first) and "predicted" in first else None
        out.append(_Slide(ts, list(classes), negative, predicted, label))
    return out
