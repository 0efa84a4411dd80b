"""The report's per-slide sections, every number labelled with where it comes from.

- **out-of-fold**: for each seed, the prediction of the one fold model whose test set held the slide (it
  never trained on it), as in the run's predictions.csv; the slide's out-of-fold value is their mean over
  the seeds, leaving out degenerate fold models (train/degenerate.py) unless every seed's is.
- **all fold models averaged**: a cohort run's results store (``results/<head>/``) averages every
  non-degenerate fold model, most of which trained on the slide, so for a labelled slide it is an
  in-sample number; it is shown beside the out-of-fold one, never instead of it.

Heatmaps and tile galleries use the out-of-fold models applied to the slide's FeatureStore; only where no
FeatureStore is known do they fall back to the results store, and say so.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PathweakError, UnsupportedSlideError
from .gallery import display_score, fold_scores, sample_slides, slide_panel
from .page import linked, section

MAX_ROWS = 200  # rows of the per-slide predictions table


def oof_table(pred: Any, column: str, degenerate: list[str]) -> Any:
    """One row per slide of a run's predictions.csv (every seed): its label, each seed's out-of-fold
    value and model folder, and ``oof``: the mean over seeds of the non-degenerate models' values (of all
    seeds when every one is degenerate)."""
    import pandas as pd

    rows = []
    for sid, part in pred.groupby("slide_id", sort=False):
        part = part.sort_values("seed")
        names = [f"seed{int(s)}_fold{int(f)}" for s, f in zip(part["seed"], part["fold"], strict=True)]
        values = part[column].to_numpy(np.float64)
        good = np.array([n not in degenerate for n in names])
        rows.append(
            {
                "slide_id": sid,
                "patient_id": part["patient_id"].iloc[0],
                "label": part["label"].iloc[0] if "label" in part else "",
                "models": names,
                "values": values.tolist(),
                "degenerate": [not g for g in good],
                column: float(values[good].mean() if good.any() else values.mean()),
            }
        )
    return pd.DataFrame(rows)


def slides_sections(
    src: Any, pred: Any, out: Path, n: int, k: int, stores: dict[str, str], ensemble: dict[str, Any]
) -> list[str]:
    """The per-slide predictions table and the slides with their heatmaps and tile galleries."""
    s = src.summary
    from ..train.columns import score_columns

    column = score_columns(s.get("classes"), s["task"])[-1]
    degenerate = list(ensemble.get("degenerate", []))
    table = oof_table(pred, column, degenerate)
    averaged = _averaged(src, column)
    members = list(
        ensemble.get("members") or sorted({f"seed{a}_fold{b}" for a, b in zip(pred["seed"], pred["fold"], strict=True)})
    )
    return [
        _predictions_table(table, column, averaged, members, src),
        _slide_panels(src, table, column, averaged, members, out, n, k, stores),
    ]


def _averaged(src: Any, column: str) -> dict[str, float]:
    """Slide -> the cohort results' value (every non-degenerate fold model averaged), when there are results."""
    import pandas as pd

    path = src.results_dir / "predictions.csv" if src.results_dir else None
    if path is None or not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype={"slide_id": str})
    return dict(zip(frame["slide_id"], frame[column].astype(float), strict=True)) if column in frame else {}


def _all(members: list[str]) -> str:
    return "the one fold model" if len(members) == 1 else f"all {len(members)} fold models"


def num(value: float) -> str:
    """A score as shown: probabilities with four decimals (0.9998 is not rounded up to 1), others to 3 digits."""
    return f"{value:.4f}" if 0.0 <= value <= 1.0 else f"{value:.3g}"


def _seed_values(row: Any) -> str:
    return ", ".join(
        f"{name}: {num(v)}" + (" (degenerate, left out)" if bad else "")
        for name, v, bad in zip(row["models"], row["values"], row["degenerate"], strict=True)
    )


def _predictions_table(table: Any, column: str, averaged: dict[str, float], members: list[str], src: Any) -> str:
    col = html.escape(column)
    head = (
        f"<tr><th>slide</th><th>patient</th><th>label</th><th>out-of-fold {col}</th>"
        "<th>per seed: the fold model that did not train on the slide</th>"
        + (f"<th>{_all(members)} averaged (in-sample)</th>" if averaged else "")
        + "</tr>"
    )
    rows = []
    for _, r in table.sort_values(column, ascending=False).head(MAX_ROWS).iterrows():
        avg = averaged.get(r["slide_id"])
        rows.append(
            f"<tr><td>{html.escape(str(r['slide_id']))}</td><td>{html.escape(str(r['patient_id']))}</td>"
            f"<td>{html.escape(str(r['label']))}</td><td><b>{num(r[column])}</b></td>"
            f"<td class=small>{html.escape(_seed_values(r))}</td>"
            + (f"<td>{num(avg) if avg is not None else '-'}</td>" if averaged else "")
            + "</tr>"
        )
    note = (
        f"<b>Out-of-fold</b>: each seed's prediction by the one fold model whose test set held the slide "
        f"(<code>{html.escape(str(src.run_dir / 'predictions.csv'))}</code>), averaged over the seeds; degenerate "
        "fold models are left out of the average. "
    )
    if averaged:
        note += (
            f"<b>All fold models averaged</b>: <code>{html.escape(str(src.results_dir / 'predictions.csv'))}</code>, "
            f"the cohort's predictions for heatmaps: every model but the slide's out-of-fold ones trained on a "
            "labelled slide, so this column is no estimate of performance."
        )
    if len(table) > MAX_ROWS:
        note += f" The {MAX_ROWS} highest of {len(table)} slides are listed."
    return section("Predictions per slide", f"<table>{head}{''.join(rows)}</table>", note)


def _slide_panels(
    src: Any,
    table: Any,
    column: str,
    averaged: dict[str, float],
    members: list[str],
    out: Path,
    n: int,
    k: int,
    stores: dict[str, str],
) -> str:
    from ..heatmap import load_scores, tile_scores

    s = src.summary
    score = display_score(s["task"], s.get("classes"))
    blocks, skipped = [], []
    for sid in sample_slides(table, column, n):
        row = table[table["slide_id"] == sid].iloc[0]
        oof = [m for m, bad in zip(row["models"], row["degenerate"], strict=True) if not bad] or list(row["models"])
        try:
            if sid in stores:
                scores, tile_store = fold_scores(src.run_dir, oof, Path(stores[sid]))
                ts = tile_scores(tile_store, scores)
                origin = f"out-of-fold models {' + '.join(oof)} averaged (none of them trained on this slide)"
                short = f"out-of-fold models {'+'.join(oof)}"
            elif src.results_dir is not None and (src.results_dir / f"{sid}.zarr").exists():
                ts = load_scores(src.results_dir / f"{sid}.zarr")
                origin = f"{_all(members)} averaged, IN-SAMPLE (results store; no FeatureStore recorded)"
                short = f"{_all(members)}, in-sample"
            else:
                skipped.append(f"{sid} (no FeatureStore recorded)")
                continue
            if score not in ts.scores:
                skipped.append(f"{sid} (no {score} score)")
                continue
            title = f"{sid} ({row['label']}): per-tile {score} of the {short}; slide out-of-fold {num(row[column])}"
            panel = slide_panel(ts, score, out, k, title=title)
        except UnsupportedSlideError:  # volume results: their heatmap is a NIfTI over the volume
            skipped.append(f"{sid} (a volume: its heatmap is a NIfTI, `pathweak export RESULTS -f nifti`)")
            continue
        except (OSError, PathweakError, KeyError) as exc:
            skipped.append(f"{sid} ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        avg = averaged.get(sid)
        numbers = (
            f"<b>out-of-fold {html.escape(column)} = {num(row[column])}</b> (mean over seeds; "
            f"{html.escape(_seed_values(row))})"
        )
        if avg is not None:
            numbers += f"; {_all(members)} averaged (in-sample, results store): {num(avg)}"
        blocks.append(
            f"<div class='slide'><h3>{html.escape(sid)} <span class=small>label: {html.escape(str(row['label']))}"
            f"</span></h3><p>{numbers}.</p><p class=note>Heatmap and tiles: per-tile <code>{html.escape(score)}</code> "
            f"from the {html.escape(origin)}; {panel['tiles']} tiles.</p>"
            f"{linked(panel['heatmap'], f'heatmap of {sid} ({origin})')}"
            f"{linked(panel['gallery'], f'highest and lowest scoring tiles of {sid}')}</div>"
        )
    note = (
        f"Slides spread over the out-of-fold {html.escape(column)}. Each heatmap shows the slide's tissue with the "
        f"per-tile <code>{html.escape(score)}</code> over it (click to enlarge); below it the {k} highest-scoring "
        f"tiles and the {k} lowest-scoring tiles that are mostly tissue, cut from the TileStore."
    )
    if skipped:
        note += " Not shown: " + html.escape("; ".join(skipped)) + "."
    return section("Slides", "".join(blocks) or "<p>No slide could be shown.</p>", note)
