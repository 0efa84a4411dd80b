"""``write_report``: one self-contained HTML page (inline CSS, no scripts, nothing fetched from the
network) plus its PNGs for a training run (``pathweak train -o RUN``) or a cohort run (its ``out``
folder, with ``summary.json``). Written as ``RUN/report.html`` and ``RUN/report_files/*.png``; the
figures use the test-fold (out-of-fold) predictions of the run's first seed."""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_file, sweep_partials
from ..errors import ConfigError
from ..store.build import building
from . import figures
from .corrections import corrections_section
from .page import FILES, img, page, section
from .slides import slides_sections


@dataclass
class RunSource:
    """Where a report's inputs are: the training run, and for a cohort run its folder and results."""

    run_dir: Path
    summary: dict[str, Any]
    out: Path  # the folder receiving report.html
    cohort: dict[str, Any] | None = None
    results_dir: Path | None = None


def find_run(path: str | Path) -> RunSource:
    """A training run folder (run.json) or a cohort run folder (summary.json naming its model)."""
    path = Path(path)
    if (path / "run.json").is_file():
        return RunSource(path, json.loads((path / "run.json").read_text()), path)
    if (path / "summary.json").is_file():
        cohort = json.loads((path / "summary.json").read_text())
        where = cohort.get("where", {})
        model = Path(where["model"]) if where.get("model") else None
        if model is None or not (model / "run.json").is_file():
            raise ConfigError(
                "this cohort run has no trained model to report on",
                path=path,
                fix="run its train stage (pathweak cohort run SPEC) first",
            )
        results = Path(where["results"]) if where.get("results") else None
        return RunSource(
            model, json.loads((model / "run.json").read_text()), path, _results_time(path, cohort), results
        )
    raise ConfigError(
        "not a training run or cohort run (no run.json or summary.json)",
        path=path,
        fix="pass the folder of `pathweak train -o RUN` or a cohort run's out folder",
    )


def _results_time(out: Path, cohort: dict[str, Any]) -> dict[str, Any]:
    """summary.json's cohort record with the time the results took (each stage's seconds when it last did
    work, ``state/timings.json`` of the cohort run) in place of the last run's own time."""
    try:
        stages = {str(k): float(v) for k, v in json.loads((out / "state" / "timings.json").read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return cohort
    skipped = [st["name"] for st in cohort.get("stages", []) if st.get("skipped") and not st.get("done")]
    return {
        **cohort,
        "seconds": round(sum(stages.values()), 1),
        "stage_seconds": stages,
        "run_seconds": cohort.get("seconds"),
        "skipped": skipped,
    }


def write_report(
    path: str | Path | RunSource,
    *,
    slides: int = 4,
    tiles: int = 6,
    bootstrap: int = 200,
    features: list[str | Path] | None = None,
) -> Path:
    """Write the report of the run at ``path`` (or of a :class:`RunSource`); returns ``report.html``.
    ``slides``: how many slides get a heatmap and tile gallery; ``features``: FeatureStores to use when
    the run does not record them."""
    import pandas as pd

    src = path if isinstance(path, RunSource) else find_run(path)
    s = src.summary
    started = time.perf_counter()
    pred = pd.read_csv(src.run_dir / "predictions.csv", dtype={"slide_id": str, "patient_id": str})
    seed = int(next(iter(s["seeds"])))
    frame = pred[pred["seed"] == seed].reset_index(drop=True)
    files = src.out / FILES
    sweep_partials(src.out, prefix=".report")  # a killed run's report_files/ and report.html leftovers
    with building(files) as tmp:
        tmp.mkdir()
        ensemble = dict(s.get("ensemble") or {})
        sections = [_overview(src), *_degenerate(s, ensemble), _metrics_table(s)]
        corrections = corrections_section(src.run_dir, s)  # weak-only and corrected side by side (docs/review.md)
        if corrections:
            sections.append(corrections)
        sections += _task_figures(s, frame, tmp, bootstrap)
        folds = [dict(f, seed=int(k)) for k, v in s["seeds"].items() for f in v["folds"]]
        if any(f.get("history") for f in folds):
            figures.training_curves(folds, tmp / "training_curves.png")
            sections.append(
                section(
                    "Training curves",
                    img("training_curves.png", "training and validation loss per fold"),
                    "Loss per epoch of every (seed, fold); the dotted line is the epoch whose weights were kept; "
                    "a degenerate fold model's title is red.",
                )
            )
        sections += slides_sections(src, pred, tmp, slides, tiles, _feature_stores(s, features), ensemble)
        html_text = page(s, sections, time.perf_counter() - started)
    out = src.out / "report.html"
    with atomic_file(out) as fh:
        fh.write(html_text)
    return out


# -- sections ---------------------------------------------------------------------------------------------------


def _task_figures(s: dict[str, Any], frame: Any, out: Path, bootstrap: int) -> list[str]:
    task, classes = s["task"], s.get("classes")
    groups = frame["patient_id"].to_numpy()
    parts: list[str] = []
    if classes:
        from ..train.columns import score_columns

        prob = frame[score_columns(classes)].to_numpy(np.float64)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[str(v)] for v in frame["label"].astype(str)])
        shown = [len(classes) - 1] if len(classes) == 2 else list(range(len(classes)))
        for c in shown:
            name = f"roc_pr_{c}.png"
            figures.roc_pr(y == c, prob[:, c], groups, out / name, classes[c], bootstrap)
            parts.append(img(name, f"ROC and PR curves, {classes[c]}"))
        cal_y, cal_p = (y == 1, prob[:, 1]) if len(classes) == 2 else (prob.argmax(1) == y, prob.max(1))
        figures.calibration(
            cal_y.astype(float),
            cal_p,
            out / "calibration.png",
            classes[1] if len(classes) == 2 else "predicted class (top label)",
        )
        figures.confusion(y, prob.argmax(1), classes, out / "confusion.png")
        parts += [img("calibration.png", "calibration"), img("confusion.png", "confusion matrix")]
        return [
            section(
                "Classification",
                "".join(parts),
                f"Out-of-fold predictions of seed {frame['seed'].iloc[0]}; bands: 2.5-97.5 percentiles of "
                f"{bootstrap} patient bootstrap resamples.",
            )
        ]
    if task == "survival":
        _, p = figures.kaplan_meier_groups(
            frame["time"].to_numpy(np.float64),
            frame["event"].to_numpy(np.int64),
            frame["risk"].to_numpy(np.float64),
            out / "kaplan_meier.png",
        )
        return [
            section(
                "Survival",
                img("kaplan_meier.png", "Kaplan-Meier curves of predicted risk groups"),
                f"Slides split at the median predicted risk (out-of-fold); log-rank p = {p:.3g} "
                f"(scikit-survival). Risk: {html.escape(s.get('survival', {}).get('risk', 'risk'))}.",
            )
        ]
    col = "proportion" if task == "proportion" else "prediction"
    label = "proportion" if task == "proportion" else "target"
    figures.scatter(frame["label"].to_numpy(np.float64), frame[col].to_numpy(np.float64), out / "scatter.png", label)
    return [section("Predicted vs true", img("scatter.png", "predicted vs true"), "Out-of-fold predictions.")]


def _feature_stores(s: dict[str, Any], features: list[str | Path] | None) -> dict[str, str]:
    """Slide id -> FeatureStore: those the run recorded, and ``features`` given for runs that did not."""
    stores = dict(s.get("feature_stores") or {})
    if features:
        from ..store.features import FeatureStore, find_feature_stores

        stores.update({FeatureStore.open(p).slide_id: str(p) for p in find_feature_stores(list(features))})
    return stores


def _degenerate(s: dict[str, Any], ensemble: dict[str, Any]) -> list[str]:
    """A warning section naming the degenerate fold models (train/degenerate.py), when there are any."""
    bad = list(ensemble.get("degenerate") or [])
    if not bad:
        return []
    checks = {f"seed{k}_fold{f['fold']}": f for k, v in s["seeds"].items() for f in v["folds"]}
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: kept epoch {checks[name].get('best_epoch')} of {checks[name].get('epochs')} "
        f"(validation loss {checks[name].get('best_val_loss', float('nan')):.3g}); on its own training slides "
        f"loss {checks[name]['fit_check'].get('loss', float('nan')):.3g} against "
        f"{checks[name]['fit_check'].get('constant_loss', float('nan')):.3g} for the best constant</li>"
        for name in bad
        if name in checks
    )
    left_out = ensemble.get("excluded") or []
    what = (
        f"Left out of the averaged predictions (results store): {html.escape(', '.join(left_out))}."
        if left_out
        else "Every fold model is degenerate, so the averaged predictions are as uninformative."
    )
    body = (
        f"<div class=warn><p><b>Degenerate fold model(s)</b>: they fit their own training slides no better than "
        f"a constant prediction and predict about the same for every slide.</p><ul>{items}</ul><p>{what} Their "
        "out-of-fold predictions stay in the metrics, as cross-validation produced them, and are marked in the "
        f"predictions table. Rule: {html.escape(str(ensemble.get('rule', '')))}.</p></div>"
    )
    return [section("Degenerate fold models", body)]


def _overview(src: RunSource) -> str:
    s = src.summary
    counts = s["labels"].get("class_counts")
    items: list[tuple[str, str | None]] = [
        ("model", _text(s.get("model_id"))),
        ("head", _text(s.get("head"))),
        ("task", _text(s.get("task"))),
        ("classes", _text(", ".join(s["classes"])) if s.get("classes") else None),
        ("slides / patients", f"{s['labels']['slides']} / {s['labels']['patients']}"),
        ("counts", _counts_table(counts) if counts else None),
        ("splits", _text(s["splits"]["source"])),
        ("seeds", _text(", ".join(s["seeds"]))),
        ("ensemble", _ensemble_text(s)),
        ("encoder", _text(s.get("features", {}).get("encoder_id"))),
        ("training seconds", _text(s.get("seconds"))),
        ("run folder", _text(str(src.run_dir.resolve()))),
    ]
    if s.get("survival"):
        items.append(("survival", _text(f"{s['survival']['loss']} loss; td-AUC times {s['survival']['eval_times']}")))
    if src.cohort:
        items.insert(0, ("cohort", _text(_cohort_text(src.cohort))))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in items if v is not None)
    return section("Run", f"<table class='kv'>{rows}</table>")


def _text(value: Any) -> str | None:
    return None if value is None else html.escape(str(value))


def _counts_table(counts: dict[str, int]) -> str:
    """Slides per class (or events and censored) as a small table."""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in counts)
    cells = "".join(f"<td>{int(v)}</td>" for v in counts.values())
    return f"<table class=inner><tr>{head}</tr><tr>{cells}</tr></table>"


def _cohort_text(c: dict[str, Any]) -> str:
    """The cohort row: the time the results took (each stage's time in the run that made its outputs), and
    this run's own time when it differs (a rerun that skipped the work)."""
    stages = c.get("stage_seconds") or {}
    text = f"{c.get('cohort')} ({c.get('slides')} slides); results made in {c.get('seconds')} s"
    if stages:
        text += " (" + ", ".join(f"{k} {v:g} s" for k, v in stages.items()) + ")"
    run, skipped = c.get("run_seconds"), c.get("skipped") or []
    if run is not None and skipped:
        text += f"; this run took {run} s, skipping {', '.join(skipped)} (up to date)"
    return text + f"; finished {c.get('finished')}"


def _ensemble_text(s: dict[str, Any]) -> str | None:
    ensemble = s.get("ensemble")
    if not ensemble:
        return None
    n = len(ensemble.get("members", []))
    text = f"{n} fold models averaged for the results store"
    if ensemble.get("excluded"):
        text += f"; left out as degenerate: {', '.join(ensemble['excluded'])}"
    return html.escape(text)


def _metrics_table(s: dict[str, Any]) -> str:
    first = next(iter(s["seeds"]))
    ci = s["seeds"][first].get("ci95", {})
    head = (
        "<tr><th>metric</th><th>mean</th><th>std</th><th>min</th><th>max</th><th>seeds</th>"
        f"<th>seed {html.escape(first)} 95% CI</th></tr>"
    )
    rows = []
    for name, m in s["metrics"].items():
        c = ci.get(name)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{m['mean']:.3f}</td><td>{m['std']:.3f}</td><td>{m['min']:.3f}</td>"
            f"<td>{m['max']:.3f}</td><td>{m['n']}</td><td>{f'{c[0]:.3f} - {c[1]:.3f}' if c else '–'}</td></tr>"
        )
    return section(
        "Metrics",
        f"<table>{head}{''.join(rows)}</table>",
        "Across seeds (each pooled over its test folds); the interval is the patient bootstrap of the first seed.",
    )
