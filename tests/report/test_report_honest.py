"""An honest report of a cohort-style run: each slide's out-of-fold prediction (the fold models that never
trained on it) beside the in-sample average, heatmaps from those out-of-fold models, large, linked and
titled with the tissue showing through, lowest-scoring tiles taken from tissue, readable tile captions,
and class counts as a table."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pathweak.train import TrainConfig, predict_slides, train_cohort

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort_report(mil_cohort, tmp_path_factory):
    """A cohort run's layout (models/abmil, results/abmil, summary.json) of a real two-seed run, reported."""
    from pathweak.report import write_report

    out = tmp_path_factory.mktemp("honest")
    cfg = TrainConfig(head="abmil", seeds=(0, 1), max_epochs=4, min_epochs=2, patience=2, lr=1e-3, bootstrap=20,
                      device="cpu")
    run = train_cohort([mil_cohort["features"]], mil_cohort["labels"], out / "models" / "abmil", cfg, progress=False)
    predict_slides(run.out_dir, [mil_cohort["features"]], out, name="abmil", progress=False)
    (out / "summary.json").write_text(json.dumps({
        "cohort": "tiny", "slides": 12, "seconds": 1.0, "finished": "now",
        "where": {"model": str(run.out_dir), "results": str(out / "results" / "abmil")}}))
    page = write_report(out, slides=3)
    return {"out": out, "run": run, "page": page, "html": page.read_text()}


def test_each_slide_shows_its_out_of_fold_prediction_beside_the_in_sample_average(cohort_report):
    from pathweak.report.slides import num

    html, out = cohort_report["html"], cohort_report["out"]
    pred = pd.read_csv(cohort_report["run"].out_dir / "predictions.csv")
    averaged = pd.read_csv(out / "results" / "abmil" / "predictions.csv").set_index("slide_id")["prob_tumour"]
    assert "<h2>Predictions per slide</h2>" in html and "all 2 fold models averaged (in-sample)" in html
    for sid, part in pred.groupby("slide_id"):
        oof = part["prob_tumour"].mean()
        row = re.search(rf"<tr><td>{sid}</td>.*?</tr>", html)
        assert row, sid
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
        assert cells[3] == f"<b>{num(oof)}</b>" and cells[5] == num(averaged[sid]), cells
        for _, r in part.iterrows():  # each seed's value, named by the fold model that held the slide out
            assert f"seed{r['seed']}_fold{r['fold']}: {num(r['prob_tumour'])}" in cells[4]
    shown = re.findall(r"<div class='slide'><h3>(\w+) ", html)
    assert len(shown) == 3
    for sid in shown:
        models = " + ".join(f"seed{s}_fold{f}" for s, f in pred.loc[pred["slide_id"] == sid, ["seed", "fold"]].values)
        assert f"from the out-of-fold models {models} averaged (none of them trained on this slide)" in html
    assert "predicted prob_tumour =" not in html  # no unlabelled number


def test_heatmaps_are_large_linked_titled_and_show_the_tissue(cohort_report, mil_cohort):
    html, page = cohort_report["html"], cohort_report["page"]
    heatmaps = re.findall(r"<a href='(report_files/heatmap_(\w+)\.png)' target='_blank'><img class=wide src='\1'", html)
    assert len(heatmaps) == 3, html[-3000:]
    for src, _sid in heatmaps:
        image = np.asarray(Image.open(page.parent / src).convert("RGB"))
        assert max(image.shape[:2]) >= 1000, image.shape
        title = image[: image.shape[0] // 20]
        assert (title.min(axis=-1) < 100).sum() > 200  # dark title text above the map
    # under the colours, the tissue shows: the overlay follows the slide's own pixels
    from pathweak.heatmap import load_scores
    from pathweak.report.gallery import background, overlay

    ts = load_scores(next((cohort_report["out"] / "results" / "abmil").glob("*.zarr")))
    ts.scores["flat"] = np.full(len(ts.coords), 0.5, np.float32)
    image, values = overlay(ts, "flat")
    base = background(ts, values.shape).astype(float).mean(-1)
    scored = np.isfinite(values)
    assert scored.mean() > 0.2
    assert np.corrcoef(image.astype(float).mean(-1)[scored], base[scored])[0, 1] > 0.9


def test_lowest_scoring_tiles_are_tissue_not_background(sample_cohort, tmp_path):
    """On a slide with background at its edges, tiles scored by how much tissue they hold: the lowest are
    edge tiles, and the gallery takes the lowest among tiles that are mostly tissue instead."""
    from pathweak.heatmap import tile_scores
    from pathweak.report.gallery import TISSUE, slide_panel, tile_tissue
    from pathweak.tiling import TileStore, tile_slides

    (result,) = tile_slides([sorted(sample_cohort.glob("*.tiff"))[0]], tmp_path, progress=False)
    store = TileStore.open(result.store)
    ts = tile_scores(store, {"score": np.zeros(len(store), np.float32)})
    tissue = np.array([tile_tissue(ts, t) for t in store.read_tiles(range(len(store)))])
    ts.scores["score"] = tissue.astype(np.float32)  # the least tissue scores lowest
    assert np.sort(tissue)[:6].max() < 0.6  # the naive lowest six are mostly background
    panel = slide_panel(ts, "score", tmp_path, k=6)
    assert len(panel["lowest_tissue"]) == 6 and min(panel["lowest_tissue"]) >= TISSUE
    gallery = np.asarray(Image.open(tmp_path / panel["gallery"]).convert("RGB"))
    assert gallery.shape[1] >= 1000


def test_tile_captions_are_readable_and_counts_are_a_table(cohort_report):
    html, page = cohort_report["html"], cohort_report["page"]
    (src,) = re.findall(r"<img class=wide src='(report_files/tiles_\w+\.png)'", html)[:1]
    image = np.asarray(Image.open(page.parent / src).convert("L"))
    dark_rows = np.nonzero((image[: image.shape[0] // 4] < 100).sum(axis=1) > 2)[0]
    caption = dark_rows[dark_rows < dark_rows.min() + 40]  # the first caption line's rows
    shown = min(1.0, 1150 / image.shape[1])  # the page shows it at full width (at most ~1150 px)
    assert (caption.max() - caption.min() + 1) * shown >= 11, (caption, image.shape)
    counts = re.search(r"<th>counts</th><td>(.*?)</td></tr>", html, re.S).group(1)
    assert counts.startswith("<table class=inner>") and "{" not in counts
    assert "<th>normal</th><th>tumour</th>" in counts
