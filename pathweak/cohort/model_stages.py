"""The cohort-level stages: train (cross-validated head on the labelled slides' features) and predict
(the run's models, averaged, on every slide's features). Each is skipped when its stamp says its
inputs and settings are unchanged and its outputs exist."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._atomic import atomic_file
from .._provenance import cache_key
from ..errors import ConfigError, PathweakError
from ..store.build import build_once
from .manifest import Slide
from .outcome import StageReport
from .spec import CohortSpec, instance_labels_path, label_rows, train_config
from .stamps import read_stamp, stamp_path, write_stamp
from .state import StateStore


def model_name(spec: CohortSpec) -> str:
    """``<head>``, or ``<head>-corrected`` when the spec trains on instance labels (so the weak-only model
    stays beside it and the report shows both)."""
    return train_config(spec).head + ("-corrected" if instance_labels_path(spec) else "")


def model_dir(spec: CohortSpec) -> Path:
    """Where the cohort's training run goes: ``<out>/models/<head>`` (``<head>-corrected``)."""
    return spec.out / "models" / model_name(spec)


def results_dir(spec: CohortSpec) -> Path:
    """Where predictions go: ``<out>/results/<head>`` (``<head>-corrected``; one results store per slide)."""
    return spec.out / "results" / model_name(spec)


def feature_stores(slides: list[Slide], state: StateStore) -> dict[str, Path]:
    """Each slide's FeatureStore, as its extract stage recorded it (slides without one are left out)."""
    out = {}
    for s in slides:
        rec = state.load(s.slide_id).stages.get("extract")
        if rec is not None and rec.status != "failed" and rec.output and Path(rec.output).exists():
            out[s.slide_id] = Path(rec.output)
    return out


def train_stage(spec: CohortSpec, slides: list[Slide], state: StateStore, progress: bool) -> StageReport:
    """Cross-validate the spec's head on the labelled slides that have features (``<out>/models/<head>``)."""
    from ..heatmap.corrections import read_corrections
    from ..heatmap.review_files import corrections_hash
    from ..train import train_cohort

    report = StageReport("train")
    t0 = time.perf_counter()
    cfg = train_config(spec)
    features = feature_stores(slides, state)
    header, labelled, rows = label_rows(slides, features, survival=cfg.task == "survival")
    corrections = instance_labels_path(spec)
    out = model_dir(spec)
    try:
        key = cache_key(
            cfg=asdict(cfg),
            labels=rows,
            features={s.slide_id: _feature_key(features[s.slide_id]) for s in labelled},
            # the corrections' content: the same files again train nothing, new ones train again
            **({"instance_labels": corrections_hash(corrections)} if corrections else {}),
        )
        if not labelled:
            raise ConfigError(
                "no labelled slide has features to train on",
                path=spec.manifest,
                fix="fill in the manifest's label column, or run with --stage tile --stage extract",
            )

        def build() -> bool:
            labels = spec.out / "labels.csv"
            with atomic_file(labels, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(header)
                w.writerows(rows)
            stores: list[str | Path] = [features[s.slide_id] for s in labelled]
            instance = read_corrections(corrections, stores, cfg.instance_overlap) if corrections else None
            train_cohort(stores, labels, out, cfg, progress=progress, instance_labels=instance)
            write_stamp(spec.out, "train", key, [out / "run.json"], run=_file_hash(out / "run.json"))
            return True

        if build_once(out, lambda: read_stamp(spec.out, "train", key) is not None, build):
            report.done.append("model")
        else:
            report.skipped.append("model")
        report.outputs.update(
            model=str(out),
            metrics=str(out / "run.json"),
            cv_predictions=str(out / "predictions.csv"),
            metrics_text=metrics_table(out / "run.json"),
        )
        report.warnings += json.loads((out / "run.json").read_text()).get("warnings", [])  # a skipped run's too
    except PathweakError as exc:
        report.failed["model"] = str(exc)
    report.seconds = time.perf_counter() - t0
    return report


def predict_stage(spec: CohortSpec, slides: list[Slide], state: StateStore, progress: bool) -> StageReport:
    """Every slide with features through the training run's models (averaged): results stores for heatmaps."""
    from ..train import predict_slides

    report = StageReport("predict")
    t0 = time.perf_counter()
    features = feature_stores(slides, state)
    run = model_dir(spec) / "run.json"
    out = results_dir(spec)
    try:
        if not run.exists():
            raise ConfigError("no trained model to predict with", path=run.parent, fix="run the train stage first")
        key = cache_key(run=_file_hash(run), features={sid: _feature_key(p) for sid, p in sorted(features.items())})

        def build() -> list[Any]:
            preds = predict_slides(run.parent, list(features.values()), spec.out, name=out.name, progress=progress)
            write_stamp(spec.out, "predict", key, [p.results for p in preds] + [out / "predictions.csv"])
            return preds

        preds = build_once(out, lambda: read_stamp(spec.out, "predict", key) is not None, build)
        done = preds is None
        if preds is None:
            report.skipped.extend(features)
        else:
            report.done.extend(p.slide_id for p in preds)
            report.warnings += [p.warning for p in preds if p.warning]
        for sid in features:
            state.record(sid, "predict", {"status": "skipped" if done else "done", "output": str(out / f"{sid}.zarr")})
        report.outputs.update(results=str(out), predictions=str(out / "predictions.csv"))
    except PathweakError as exc:
        report.failed["predictions"] = str(exc)
    report.seconds = time.perf_counter() - t0
    return report


def predict_key(spec: CohortSpec) -> str:
    """The key of the current predictions (part of every heatmap's key); empty before any prediction."""
    try:
        return str(json.loads(stamp_path(spec.out, "predict").read_text())["key"])
    except (OSError, ValueError, KeyError):
        return ""


def metrics_table(run_json: Path) -> str:
    """Cross-validated metrics of a training run as a markdown table (mean ± std across seeds)."""
    summary = json.loads(run_json.read_text())
    lines = [
        f"{summary['head']} on {summary['labels']['slides']} slides ({summary['labels']['patients']} patients), "
        f"{summary['splits']['source']}; test-fold predictions in `{run_json.parent / 'predictions.csv'}`.",
        "",
        "| metric | mean | std | min | max |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary["metrics"].items():
        lines.append(f"| {name} | {s['mean']:.3f} | {s['std']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
    return "\n".join(lines)


def _feature_key(path: Path) -> str:
    from ..store.features import FeatureStore

    return str(FeatureStore.open(path).attrs.get("cache_key", path))


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
