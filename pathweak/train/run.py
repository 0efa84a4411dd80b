"""``train_cohort``: cross-validated training of a head on a cohort's FeatureStores, over seeds, with
metrics, predictions and packaged models. The output folder appears atomically::

    OUT/run.json                       config, splits, per-seed metrics with 95% CIs, spread across seeds
    OUT/splits.csv                     slide_id, patient_id, label, fold, role (train | val | test)
    OUT/predictions.csv                every test prediction (all seeds and folds)
    OUT/predictions/seed<S>_fold<F>.csv   the same, one file per fold
    OUT/models/seed<S>_fold<F>/        model.safetensors + model.json (see package.py)
    OUT/logs/seed<S>_fold<F>/          Lightning CSV logs (train_loss, val_loss per epoch)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _provenance
from .._atomic import atomic_file, ensure_replaceable, sweep_partials
from ..cpus import head_threads_on
from ..progress import log_line, progress_bar
from ..store import build as lifecycle
from ..store.features import FeatureStore, find_feature_stores
from .columns import safe_name, score_columns, tile_score_columns  # noqa: F401  (re-exported)
from .config import TrainConfig
from .degenerate import fold_check, fold_line
from .fit import FitResult, fit_all
from .label_augmentation import with_label_augmentation
from .labels import DATAFRAME, LabelTable, read_labels
from .metrics import bootstrap_ci, classification_metrics, regression_metrics, spread
from .splits import Fold, fold_warnings, make_folds

if TYPE_CHECKING:
    from ..protocols import FeatureBankLike
    from .instance_labels import Corrections

RUN_FORMAT = "pathweak-train-run/1"


@dataclass
class TrainRun:
    """What :func:`train_cohort` produced (``summary`` is run.json)."""

    out_dir: Path
    summary: dict[str, Any]
    fits: list[FitResult] = field(default_factory=list, repr=False)
    predictions: Any = field(default=None, repr=False)  # pandas DataFrame


def train_cohort(
    features: list[str | Path],
    labels: str | Path | Any,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    progress: bool = True,
    bank: FeatureBankLike | None = None,
    record: dict[str, Any] | None = None,
    instance_labels: Corrections | None = None,
) -> TrainRun:
    """Train ``cfg.head`` on the labelled slides of ``features`` (FeatureStores, folders or globs) with
    patient-level cross-validation (or the labels' split column) for every seed in ``cfg.seeds``.
    ``labels`` is a CSV path or a pandas DataFrame of the same columns (then written into the run as
    ``labels.csv``). Labelled slides whose bags are empty (no tiles) are left out with a warning.
    ``bank`` reuses an already loaded FeatureBank whose slide order is the labels file's. What is allowed
    but suspicious is recorded under ``warnings`` in run.json (docs/input_checks.md). ``record``: more entries
    for run.json (e.g. ``finetune``, train/end_to_end.py). ``instance_labels``: a
    reviewer's per-tile corrections (``pathweak.heatmap.read_corrections``), trained on beside the slide
    labels and recorded under ``instance_labels`` in run.json (docs/review.md)."""
    import pandas as pd

    from ..features.bank import bank_summary, load_feature_bank

    cfg = cfg or TrainConfig()
    started = time.perf_counter()
    out = Path(out_dir)
    ensure_replaceable(out, "run.json", "a training run")  # before the work, not after it
    sweep_partials(out.parent, prefix=f".{out.name}")  # a killed run's leftovers (tile and extract do the same)
    if bank is None:
        stores = [FeatureStore.open(p) for p in find_feature_stores(list(features))]
        table = read_labels(labels, [s.slide_id for s in stores], cfg.task, cfg.classes)
        table = _without_empty_bags(table, {s.slide_id for s in stores if len(s) == 0})
        folds = make_folds(table, cfg.folds, cfg.split_seed, cfg.val_fraction)
        bank = load_feature_bank(
            stores, slide_ids=table.slide_ids, device=cfg.device, dtype=cfg.dtype, stream=cfg.stream, progress=progress
        )
    else:
        table = read_labels(labels, list(bank.slide_ids), cfg.task, cfg.classes)
        if table.slide_ids != list(bank.slide_ids):
            raise ValueError("the bank's slides must be the labels file's, in its order")
        _refuse_empty_bags(bank, table)
        folds = make_folds(table, cfg.folds, cfg.split_seed, cfg.val_fraction)
    instance = None
    if instance_labels is not None:
        from .instance_labels import use_instance_labels

        instance = use_instance_labels(cfg, table, folds, instance_labels)
    cfg = with_label_augmentation(cfg, bank, table.classes)  # its head option, or one clear error
    warnings = [*table.warnings, *fold_warnings(folds, table)]
    frame: Any = labels if table.path == DATAFRAME else None
    if frame is not None:  # the run keeps the labels it was given, and names them
        table.path = out / "labels.csv"
    tmp = lifecycle.begin(out)
    fits: list[FitResult] = []
    try:
        tmp.mkdir(parents=True)
        if frame is not None:
            with atomic_file(tmp / "labels.csv", "w", newline="") as fh:
                frame.to_csv(fh, index=False)
        _write_splits(tmp / "splits.csv", table, folds)
        total = len(cfg.seeds) * len(folds) * cfg.max_epochs
        checks: dict[str, dict[str, Any]] = {}
        by_index = {f.index: f for f in folds}

        def checked(fit: FitResult) -> None:  # as each fold ends: the degenerate-model rule and a log line
            name = f"seed{fit.seed}_fold{fit.fold}"
            checks[name] = fold_check(fit, bank, table, by_index[fit.fold])
            log_line(fold_line(fit, cfg, checks[name]))

        with (
            progress_bar(total, f"training {cfg.head}", progress, unit="epochs") as advance,
            head_threads_on(bank.device, bank.n_tiles * bank.embed_dim / max(1, len(bank))),
        ):
            jobs = [(seed, fold) for seed in cfg.seeds for fold in folds]
            fits = fit_all(
                bank, table, jobs, cfg, log_dir=tmp / "logs", advance=advance, done=checked
            )  # --devices N: one world
            frames = [_save_fold(tmp, fit, bank, table, fold, cfg) for fit, (_, fold) in zip(fits, jobs, strict=True)]
        predictions = pd.concat(frames, ignore_index=True)
        with atomic_file(tmp / "predictions.csv", "w", newline="") as fh:
            predictions.to_csv(fh, index=False, float_format="%.6g")
        summary = _summary(
            cfg, table, folds, fits, predictions, bank_summary(bank), time.perf_counter() - started, checks
        )
        summary["warnings"] = [*warnings, *summary["ensemble"]["warnings"]]
        if instance is not None:
            summary["instance_labels"] = instance
        summary.update(record or {})
        paths = getattr(bank, "paths", None)
        if paths is not None:  # where each slide's features are (for `pathweak report`)
            summary["feature_stores"] = {
                sid: str(Path(p).resolve()) for sid, p in zip(bank.slide_ids, paths, strict=False)
            }
        (tmp / "run.json").write_text(json.dumps(summary, indent=2, default=str))
        lifecycle.commit(tmp, out, marker="run.json", what="a training run")
    except BaseException:
        lifecycle.discard(tmp)
        raise
    return TrainRun(out, summary, fits, predictions)


def _without_empty_bags(table: LabelTable, empty: set[str]) -> LabelTable:
    """``table`` without its slides whose FeatureStores hold no rows (nothing to learn from, nothing to
    score), with a warning naming them; an error when no labelled slide is left."""
    left_out = [s for s in table.slide_ids if s in empty]
    if not left_out:
        return table
    more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
    if len(left_out) == len(table):
        from ..errors import LabelsError

        raise LabelsError(
            f"every labelled slide's features are empty ({', '.join(left_out[:5])}{more}): their tile stores hold no tiles",
            path=table.path,
            fix="re-tile the slides (see the warnings of `pathweak tile`: no tissue found, or an ROI outside the slide)",
        )
    kept = table.without(set(left_out))
    kept.warnings.append(
        f"{table.path}: {len(left_out)} labelled slide(s) left out because their features are empty (no tiles): "
        f"{', '.join(left_out[:5])}{more}; re-tile them (see the warnings of `pathweak tile`) to include them"
    )
    return kept


def _refuse_empty_bags(bank: FeatureBankLike, table: LabelTable) -> None:
    """A bank given by the caller keeps the labels' order, so an empty bag in it is an error, not left out."""
    from ..errors import LabelsError

    empty = [sid for i, sid in enumerate(bank.slide_ids) if len(bank.bag(i)) == 0]
    if empty:
        raise LabelsError(
            f"slide {', '.join(empty[:5])} has an empty bag (no tiles)",
            path=table.path,
            fix="leave slides without tiles out of the labels and the bank, or re-tile them",
        )


def _save_fold(
    tmp: Path, fit: FitResult, bank: FeatureBankLike, table: LabelTable, fold: Fold, cfg: TrainConfig
) -> Any:
    """Package the fold's model and write its test predictions; returns them as a DataFrame."""
    import pandas as pd

    from .infer import predict_rows
    from .package import save_model

    name = f"seed{fit.seed}_fold{fold.index}"
    training = {
        "seed": fit.seed,
        "fold": fold.index,
        "best_epoch": fit.best_epoch,
        "epochs": fit.epochs,
        "best_val_loss": fit.best_val_loss,
        "n_train": len(fold.train),
        "n_val": len(fold.val),
        "n_test": len(fold.test),
        "labels": str(table.path.resolve()),
        "config": asdict(cfg),
        "seconds": round(fit.seconds, 2),
        "versions": _provenance.versions("torch", "lightning"),
        **(
            {"survival": {"loss": cfg.survival_loss, "time_bins": fit.time_bins, "risk": _RISK[cfg.survival_loss]}}
            if table.task == "survival"
            else {}
        ),
    }
    folder = save_model(
        tmp / "models" / name,
        fit.head,
        task=table.task,
        classes=table.classes,
        encoder=bank.encoder,
        target_scale=fit.target_scale,
        training=training,
    )
    model_id = json.loads((folder / "model.json").read_text())["model_id"]
    out = predict_rows(fit.head, bank, fold.test, table.task, fit.target_scale)
    rows = fold.test
    frame = pd.DataFrame(
        {
            "slide_id": [table.slide_ids[i] for i in rows],
            "patient_id": [table.patient_ids[i] for i in rows],
            "seed": fit.seed,
            "fold": fold.index,
            "model": model_id,
        }
    )
    for j, col in enumerate(score_columns(table.classes, table.task)):
        frame[col] = out[:, j] if len(rows) else []
    if table.classes is not None:
        frame["predicted"] = [table.classes[k] for k in out.argmax(1)] if len(rows) else []
    if table.task == "survival":
        frame["time"] = table.times[rows]  # type: ignore[index]
        frame["event"] = table.events[rows]  # type: ignore[index]
    else:
        frame["label"] = [table.labels[i] for i in rows]
    (tmp / "predictions").mkdir(exist_ok=True)
    with atomic_file(tmp / "predictions" / f"{name}.csv", "w", newline="") as fh:
        frame.to_csv(fh, index=False, float_format="%.6g")
    return frame


_RISK = {"cox": "log relative hazard", "discrete": "minus the expected survival over the time bins"}


def eval_times(table: LabelTable, cfg: TrainConfig | None) -> tuple[float, ...]:
    """Times of the time-dependent AUC: the config's, or the quartiles of the event times."""
    from .survival import default_times

    return (cfg.eval_times if cfg else None) or default_times(table.times, table.events)  # type: ignore[arg-type]


def metric_function(table: LabelTable, cfg: TrainConfig | None = None) -> Any:
    """``fn(y, scores)`` of the task: classification, regression (also proportion) or survival metrics
    (``y`` then (n, 2) rows of time and event, at :func:`eval_times`)."""
    if table.task == "survival":
        from .survival import survival_metrics

        times = eval_times(table, cfg)
        return lambda y, s: survival_metrics(y, s[:, 0], times)
    if table.classes is not None:
        return classification_metrics
    return lambda y, s: regression_metrics(y, s[:, 0])


def evaluate(table: LabelTable, frame: Any, cfg: TrainConfig | None = None) -> dict[str, float]:
    """Metrics of a predictions frame against the labels."""
    y, scores = _y_scores(table, frame)
    return metric_function(table, cfg)(y, scores)


def _y_scores(table: LabelTable, frame: Any) -> tuple[np.ndarray, np.ndarray]:
    index = {sid: i for i, sid in enumerate(table.slide_ids)}
    rows = [index[s] for s in frame["slide_id"]]
    y = np.column_stack([table.times[rows], table.events[rows]]) if table.task == "survival" else table.targets[rows]  # type: ignore[index]
    return y, frame[score_columns(table.classes, table.task)].to_numpy(np.float64)


def _summary(
    cfg: TrainConfig,
    table: LabelTable,
    folds: list[Fold],
    fits: list[FitResult],
    predictions: Any,
    bank: dict[str, Any],
    seconds: float,
    checks: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    from .degenerate import ensemble_members

    checks = checks or {}
    metric_fn = metric_function(table, cfg)
    per_seed: dict[str, Any] = {}
    for seed in cfg.seeds:
        frame = predictions[predictions["seed"] == seed]
        y, scores = _y_scores(table, frame)
        fold_rows: list[dict[str, Any]] = []
        for fit in (f for f in fits if f.seed == seed):
            part = frame[frame["fold"] == fit.fold]
            fold_rows.append(
                {
                    "fold": fit.fold,
                    "best_epoch": fit.best_epoch,
                    "epochs": fit.epochs,
                    "best_val_loss": fit.best_val_loss,
                    "seconds": round(fit.seconds, 2),
                    "metrics": evaluate(table, part, cfg) if len(part) else {},
                    "fit_check": checks.get(f"seed{seed}_fold{fit.fold}", {"assessed": False}),
                    "history": fit.history,
                }
            )
        per_seed[str(seed)] = {
            "metrics": metric_fn(y, scores),
            "ci95": bootstrap_ci(metric_fn, y, scores, frame["patient_id"].to_numpy(), n=cfg.bootstrap, seed=seed)
            if cfg.bootstrap
            else {},
            "fold_spread": spread([r["metrics"] for r in fold_rows if r["metrics"]]),
            "folds": fold_rows,
        }
    weights = hashlib.sha256("".join(sorted(str(m) for m in predictions["model"].unique())).encode()).hexdigest()[:10]
    counts = {c: int((table.targets == i).sum()) for i, c in enumerate(table.classes)} if table.classes else None
    if table.task == "survival":
        counts = {"event": int(table.events.sum()), "censored": int(len(table) - table.events.sum())}  # type: ignore[union-attr]
    return {
        "format": RUN_FORMAT,
        "model_id": f"{cfg.head}-cv-{weights}",
        "head": cfg.head,
        "task": table.task,
        "classes": table.classes,
        "positive_class": table.classes[-1] if table.classes and len(table.classes) == 2 else None,
        "labels": {
            "path": str(table.path.resolve()),
            "slides": len(table),
            "patients": len(set(table.patient_ids)),
            "class_counts": counts,
        },
        "features": bank,
        "splits": {
            "source": "split column" if table.split is not None else f"{len(folds)}-fold stratified by patient",
            "split_seed": cfg.split_seed,
            "sizes": [{"fold": f.index, "train": len(f.train), "val": len(f.val), "test": len(f.test)} for f in folds],
        },
        "metrics": spread([per_seed[str(s)]["metrics"] for s in cfg.seeds]),
        **(
            {
                "survival": {
                    "loss": cfg.survival_loss,
                    "risk": _RISK[cfg.survival_loss],
                    "bags_per_step": cfg.step_bags,
                    "eval_times": list(eval_times(table, cfg)),
                    "library": "torchsurv (Cox loss), scikit-survival (metrics)",
                }
            }
            if table.task == "survival"
            else {}
        ),
        "seeds": per_seed,
        "ensemble": ensemble_members(checks),
        "config": asdict(cfg),
        "seconds": round(seconds, 1),
        "versions": _provenance.versions(
            "torch",
            "lightning",
            "scikit-learn",
            *(("torchsurv", "scikit-survival") if table.task == "survival" else ()),
        ),
    }


def _write_splits(path: Path, table: LabelTable, folds: list[Fold]) -> None:
    import csv

    with atomic_file(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "patient_id", "label", "fold", "role"])
        for f in folds:
            for i, role in enumerate(f.role_of(len(table))):
                if role:
                    w.writerow([table.slide_ids[i], table.patient_ids[i], table.labels[i], f.index, role])
