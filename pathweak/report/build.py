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
from ..errors import ConfigError, PathweakError, UnsupportedSlideError
from ..store.build import building
from . import figures
from .corrections import corrections_section
from .gallery import display_score, fold_scores, sample_slides, slide_panel

FILES = "report_files"


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
        return RunSource(model, json.loads((model / "run.json").read_text()), path, cohort, results)
    raise ConfigError(
        "not a training run or cohort run (no run.json or summary.json)",
        path=path,
        fix="pass the folder of `pathweak train -o RUN` or a cohort run's out folder",
    )


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
        sections = [_overview(src), _metrics_table(s)]
        sections += _task_figures(s, frame, tmp, bootstrap)
        folds = [dict(f, seed=int(k)) for k, v in s["seeds"].items() for f in v["folds"]]
        if any(f.get("history") for f in folds):
            figures.training_curves(folds, tmp / "training_curves.png")
            sections.append(
                _section(
                    "Training curves",
                    _img("training_curves.png", "training and validation loss per fold"),
                    "Loss per epoch of every (seed, fold); the dotted line is the epoch whose weights were kept.",
                )
            )
        sections.append(_slides_section(src, frame, tmp, slides, tiles, features))
        corrections = corrections_section(src.run_dir, s)  # weak-only and corrected side by side (docs/review.md)
        if corrections:
            sections.insert(2, corrections)
        page = _page(s, sections, time.perf_counter() - started)
    out = src.out / "report.html"
    with atomic_file(out) as fh:
        fh.write(page)
    return out


# -- sections ---------------------------------------------------------------------------------------------------


def _task_figures(s: dict[str, Any], frame: Any, out: Path, bootstrap: int) -> list[str]:
    task, classes = s["task"], s.get("classes")
    groups = frame["patient_id"].to_numpy()
    parts: list[str] = []
    if classes:
        from ..train.run import score_columns

        prob = frame[score_columns(classes)].to_numpy(np.float64)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[str(v)] for v in frame["label"].astype(str)])
        shown = [len(classes) - 1] if len(classes) == 2 else list(range(len(classes)))
        for c in shown:
            name = f"roc_pr_{c}.png"
            figures.roc_pr(y == c, prob[:, c], groups, out / name, classes[c], bootstrap)
            parts.append(_img(name, f"ROC and PR curves, {classes[c]}"))
        cal_y, cal_p = (y == 1, prob[:, 1]) if len(classes) == 2 else (prob.argmax(1) == y, prob.max(1))
        figures.calibration(
            cal_y.astype(float),
            cal_p,
            out / "calibration.png",
            classes[1] if len(classes) == 2 else "predicted class (top label)",
        )
        figures.confusion(y, prob.argmax(1), classes, out / "confusion.png")
        parts += [_img("calibration.png", "calibration"), _img("confusion.png", "confusion matrix")]
        return [
            _section(
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
            _section(
                "Survival",
                _img("kaplan_meier.png", "Kaplan-Meier curves of predicted risk groups"),
                f"Slides split at the median predicted risk (out-of-fold); log-rank p = {p:.3g} "
                f"(scikit-survival). Risk: {html.escape(s.get('survival', {}).get('risk', 'risk'))}.",
            )
        ]
    col = "proportion" if task == "proportion" else "prediction"
    label = "proportion" if task == "proportion" else "target"
    figures.scatter(frame["label"].to_numpy(np.float64), frame[col].to_numpy(np.float64), out / "scatter.png", label)
    return [_section("Predicted vs true", _img("scatter.png", "predicted vs true"), "Out-of-fold predictions.")]


def _slides_section(src: RunSource, frame: Any, out: Path, n: int, k: int, features: list[str | Path] | None) -> str:
    from ..heatmap import load_scores, tile_scores
    from ..train.run import score_columns

    s = src.summary
    score = display_score(s["task"], s.get("classes"))
    column = score_columns(s.get("classes"), s["task"])[-1]
    stores = dict(s.get("feature_stores") or {})
    if features:
        from ..features.store import FeatureStore, find_feature_stores

        stores.update({FeatureStore.open(p).slide_id: str(p) for p in find_feature_stores(list(features))})
    rows, skipped = [], []
    for sid in sample_slides(frame, column, n):
        try:
            results = src.results_dir / f"{sid}.zarr" if src.results_dir else None
            if results is not None and results.exists():
                ts = load_scores(results)
                origin = "results store of the cohort's averaged models"
            elif sid in stores:
                row = frame[frame["slide_id"] == sid].iloc[0]
                table, tile_store = fold_scores(
                    src.run_dir, f"seed{int(row['seed'])}_fold{int(row['fold'])}", Path(stores[sid])
                )
                ts = tile_scores(tile_store, table)
                origin = f"model of fold {int(row['fold'])} (slide in its test set)"
            else:
                skipped.append(f"{sid} (no FeatureStore recorded)")
                continue
            if score not in ts.scores:
                skipped.append(f"{sid} (no {score} score)")
                continue
            panel = slide_panel(ts, score, out, k)
        except UnsupportedSlideError:  # volume results: their heatmap is a NIfTI over the volume
            skipped.append(f"{sid} (a volume: its heatmap is a NIfTI, `pathweak export RESULTS -f nifti`)")
            continue
        except (OSError, PathweakError, KeyError) as exc:
            skipped.append(f"{sid} ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        pred = frame.loc[frame["slide_id"] == sid, column].iloc[0]
        rows.append(
            f"<div class='slide'><h3>{html.escape(sid)}</h3><p>predicted {html.escape(column)} = {pred:.3g}; "
            f"per-tile <code>{html.escape(score)}</code> from the {origin}, {panel['tiles']} tiles</p>"
            f"<div class='pair'>{_img(panel['heatmap'], f'heatmap of {sid}')}"
            f"{_img(panel['gallery'], f'highest and lowest scoring tiles of {sid}')}</div></div>"
        )
    note = (
        f"Slides spread over the predicted {column}; left: the heatmap of <code>{html.escape(score)}</code> over the "
        f"thumbnail, right: the {k} highest- and lowest-scoring tiles cut from the TileStore."
    )
    if skipped:
        note += " Not shown: " + html.escape("; ".join(skipped)) + "."
    return _section("Slides", "".join(rows) or "<p>No slide could be shown.</p>", note)


def _overview(src: RunSource) -> str:
    s = src.summary
    items = [
        ("model", s.get("model_id")),
        ("head", s.get("head")),
        ("task", s.get("task")),
        ("classes", ", ".join(s["classes"]) if s.get("classes") else None),
        ("slides / patients", f"{s['labels']['slides']} / {s['labels']['patients']}"),
        ("counts", json.dumps(s["labels"].get("class_counts")) if s["labels"].get("class_counts") else None),
        ("splits", s["splits"]["source"]),
        ("seeds", ", ".join(s["seeds"])),
        ("encoder", s.get("features", {}).get("encoder_id")),
        ("training seconds", s.get("seconds")),
        ("run folder", str(src.run_dir.resolve())),
    ]
    if s.get("survival"):
        items.append(("survival", f"{s['survival']['loss']} loss; td-AUC times {s['survival']['eval_times']}"))
    if src.cohort:
        items.insert(
            0,
            (
                "cohort",
                (
                    f"{src.cohort.get('cohort')} ({src.cohort.get('slides')} slides, "
                    f"{src.cohort.get('seconds')} s, finished {src.cohort.get('finished')})"
                ),
            ),
        )
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items if v is not None
    )
    return _section("Run", f"<table class='kv'>{rows}</table>")


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
    return _section(
        "Metrics",
        f"<table>{head}{''.join(rows)}</table>",
        "Across seeds (each pooled over its test folds); the interval is the patient bootstrap of the first seed.",
    )


def _section(title: str, body: str, note: str = "") -> str:
    return f"<section><h2>{html.escape(title)}</h2>{f'<p class=note>{note}</p>' if note else ''}{body}</section>"


def _img(name: str, alt: str) -> str:
    return f"<img src='{FILES}/{html.escape(name)}' alt='{html.escape(alt)}'>"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;font-size:.92em}
th{background:#f4f4f4}img{max-width:100%;margin:.3em .6em .3em 0;vertical-align:top}.note{color:#555;font-size:.92em}
.pair{display:flex;flex-wrap:wrap;align-items:flex-start}.pair img{max-width:48%}.slide{margin-bottom:1.2em}
code{background:#f4f4f4;padding:0 .2em}"""


def _page(s: dict[str, Any], sections: list[str], seconds: float) -> str:
    title = f"pathweak report: {s.get('head')} ({s.get('task')})"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class=note>Written {stamp} by pathweak in {seconds:.1f} s; open offline (the images are in "
        f"{FILES}/ beside this file).</p>{''.join(sections)}</body></html>\n"
    )
