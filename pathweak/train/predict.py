"""``predict_slides``: a packaged model (or every model of a training run, averaged) on FeatureStores,
writing per-tile scores and attention into results stores (docs/results_format.md) for heatmaps.

Results go next to the features: FeatureStores at ``<out>/features/<encoder_id>/<slide>.zarr`` give
``<out>/results/<model_id>/<slide>.zarr`` plus ``<out>/results/<model_id>/predictions.csv`` (one row
per slide). Scores per tile: ``prob_<class>`` (softmax of the head's per-tile outputs; ``prediction``
for regression; ``risk`` for survival, with the slide's ``risk`` in the table; ``prob_positive`` for
proportion, with the slide's ``proportion``) and, for attention heads, ``attention`` (summing to 1 over the slide) or, with one
branch per class, ``attention_<class>`` plus ``attention`` of the predicted class; plus the head's own
per-tile scores (``HeadOutput.tile_scores``: INS's ``pseudo_label``, the ``mask`` of INS and WSSeg),
averaged over the members of an ensemble.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_file, sweep_partials
from ..cpus import head_threads_on
from ..errors import ConfigError
from ..progress import log_line, progress_bar
from ..store.features import FeatureStore, find_feature_stores
from .columns import safe_name, score_columns, tile_score_columns


@dataclass
class SlidePrediction:
    slide_id: str
    feature_store: str
    results: str
    slide_scores: dict[str, float]
    predicted: str | None
    warning: str | None = None  # e.g. an empty bag: no score (NaN)
    excluded: list[str] = field(default_factory=list)  # degenerate fold models left out (train/degenerate.py)


def predict_slides(
    model: str | Path,
    features: list[str | Path],
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[SlidePrediction]:
    """Predict every FeatureStore in ``features`` with ``model`` (a model folder or a training run).
    ``out_dir`` overrides the folder that receives ``results/<name>/``; ``name`` the model id used there."""
    import torch

    from ..devices import parse_device
    from ..store.results import write_results
    from .package import load_models, run_ensemble

    dev = parse_device(device)
    models = load_models(model, dev)
    excluded = list(run_ensemble(model).get("excluded", []))
    first = models[0]
    stores = [FeatureStore.open(p) for p in find_feature_stores(list(features))]
    for s in stores:
        if s.encoder_id != first.encoder_id:
            raise ConfigError(
                f"the features come from encoder {s.encoder_id}, the model was trained on {first.encoder_id}",
                path=s.path,
                fix="extract features with the model's encoder (see model.json: encoder)",
            )
        if s.embed_dim != first.head.in_dim:
            raise ConfigError(
                f"features have {s.embed_dim} dimensions, the model expects {first.head.in_dim}", path=s.path
            )
    name = name or _model_name(Path(model), models)
    for root in {Path(out_dir) if out_dir is not None else default_root(s.path) for s in stores}:
        sweep_partials(root / "results" / name)  # a killed run's leftovers
    rows_by_root: dict[Path, list[dict[str, Any]]] = {}
    results = []
    sizes = [len(s) * s.embed_dim for s in stores] or [0]
    with (
        progress_bar(len(stores), f"predicting with {name}", progress, unit="slides") as advance,
        head_threads_on(dev, float(np.mean(sizes))),
    ):
        for store in stores:
            x = torch.from_numpy(store.features).to(dev)
            grid = torch.from_numpy(store.grid_positions()).to(dev)
            slide, tile_scores = ensemble(models, x, grid)
            warning = None
            if not len(store):  # a head's output on an empty bag is its bias alone: no score at all
                slide = np.full_like(slide, np.nan, dtype=np.float64)
                warning = f"{store.path}: the FeatureStore holds no rows (the slide has no tiles), so it gets no score"
            root = Path(out_dir) if out_dir is not None else default_root(store.path)
            path = root / "results" / name / f"{store.slide_id}.zarr"
            columns = score_columns(first.classes, first.task)
            slide_scores = {c: float(v) for c, v in zip(columns, slide, strict=False)}
            predicted = None if first.classes is None or warning else first.classes[int(np.argmax(slide))]
            attrs = {
                "model": {
                    "model_id": name,
                    "head": first.meta["head"],
                    "task": first.task,
                    "classes": first.classes,
                    "members": [m.model_id for m in models],
                    "excluded": excluded,
                    "encoder_id": first.encoder_id,
                },
                "feature_store": str(store.path.resolve()),
                "slide_scores": slide_scores,
                "predicted": predicted,
            }
            if "tokens" in store.attrs:  # rows are tokens inside tiles: exports draw boxes of this level-0 size
                attrs["extent"] = store.attrs["tokens"]["extent"]
            write_results(
                path,
                store.coords,
                tile_scores,
                tile_store=store.attrs["tile_store"]["path"],
                slide_id=store.slide_id,
                attrs=attrs,
            )
            rows_by_root.setdefault(root, []).append(
                {
                    "slide_id": store.slide_id,
                    "model": name,
                    **slide_scores,
                    **({"predicted": predicted} if predicted else {}),
                }
            )
            results.append(
                SlidePrediction(store.slide_id, str(store.path), str(path), slide_scores, predicted, warning, excluded)
            )
            scores_text = ", ".join(f"{c} {v:.3g}" for c, v in slide_scores.items())
            log_line(f"predict {store.slide_id}: {scores_text} ({len(models)} models averaged) -> {path}")
            advance(1)
    for root, rows in rows_by_root.items():
        _write_table(root / "results" / name / "predictions.csv", rows)
    return results


def ensemble(models: list[Any], x: Any, grid: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Slide outputs and per-tile scores of one bag, averaged over ``models``."""
    preds = [m.predict(x, grid) for m in models]
    first = models[0]
    slide = np.mean([p.slide for p in preds], axis=0)
    instance = np.mean([p.instance for p in preds], axis=0)
    scores = {c: instance[:, j] for j, c in enumerate(tile_score_columns(first.classes, first.task))}
    attns = [p.attention for p in preds]
    if all(a is not None for a in attns) and len({a.shape for a in attns}) == 1:
        attn = np.mean(attns, axis=0)
        if attn.shape[1] == 1:
            scores["attention"] = attn[:, 0]
        else:
            names = first.classes or [str(j) for j in range(attn.shape[1])]
            for j, c in enumerate(names):
                scores[f"attention_{safe_name(c)}"] = attn[:, j]
            scores["attention"] = attn[:, int(np.argmax(slide))] if first.classes else attn.mean(1)
    for key in preds[0].extra:
        if key not in scores and all(key in p.extra for p in preds):
            scores[key] = np.mean([p.extra[key] for p in preds], axis=0)
    return slide, scores


def default_root(feature_store: Path) -> Path:
    """``<out>`` for ``<out>/features/<encoder_id>/<slide>.zarr``; else the store's folder."""
    p = Path(feature_store).resolve()
    return p.parents[2] if p.parent.parent.name == "features" else p.parent


def _model_name(path: Path, models: list[Any]) -> str:
    if len(models) == 1:
        return models[0].model_id
    run = path / "run.json"
    if run.exists():
        return str(json.loads(run.read_text()).get("model_id"))
    return f"{models[0].meta['head']}-ensemble{len(models)}"


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the slide table; rows of other slides from an earlier call on the same folder are kept."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path, dtype={"slide_id": str})
        frame = pd.concat([old[~old["slide_id"].isin(frame["slide_id"])], frame], ignore_index=True)
    with atomic_file(path, "w", newline="") as fh:
        frame.to_csv(fh, index=False, float_format="%.6g")
