"""`pathweak report` on tiny real-tile runs: the HTML file and every image it shows exist and are real,
non-empty PNGs; each task gets its figures; a cohort-style folder reports from its results stores; and the
page renders in a real headless Chromium (skipped, with the reason, where Chromium is not installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pathweak.train import TrainConfig, predict_slides, train_cohort
from pathweak_cli.main import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
TINY = {"seeds": (0,), "max_epochs": 3, "min_epochs": 1, "patience": 2, "lr": 1e-3, "bootstrap": 20, "device": "cpu"}


def images(html_path: Path) -> list[Path]:
    """The files the page's <img> tags show (all must exist and be non-empty PNGs)."""
    srcs = re.findall(r"<img [^>]*src='([^']+)'", html_path.read_text())
    assert srcs
    out = []
    for src in srcs:
        assert not src.startswith(("http:", "https:", "/")), src  # offline: relative files only
        p = html_path.parent / src
        assert p.is_file() and p.stat().st_size > 1000, p
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
        out.append(p)
    return out


@pytest.fixture(scope="module")
def binary_run(mil_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "abmil"
    return train_cohort([mil_cohort["features"]], mil_cohort["labels"], out, TrainConfig(head="abmil", **TINY), progress=False)


def test_report_of_a_binary_run_has_every_figure(binary_run):
    result = runner.invoke(app, ["report", str(binary_run.out_dir), "--slides", "3", "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    page = Path(result.output.strip().splitlines()[-1])
    assert page == binary_run.out_dir / "report.html"
    names = {p.name for p in images(page)}
    assert {"roc_pr_1.png", "calibration.png", "confusion.png", "training_curves.png"} <= names
    assert len([n for n in names if n.startswith("heatmap_")]) == 3 and len([n for n in names if n.startswith("tiles_")]) == 3
    text = page.read_text()
    for needle in ("<h2>Metrics</h2>", "balanced_accuracy", "95% CI", "<h2>Slides</h2>", "out-of-fold models seed0_fold0"):
        assert needle in text
    from PIL import Image

    gallery = np.asarray(Image.open(next(p for p in images(page) if p.name.startswith("tiles_"))).convert("RGB"))
    assert gallery.std() > 20  # real tiles, not an empty canvas


def _proportion_labels(cohort, path):
    rows = pd.read_csv(cohort["labels"])
    meta = json.loads((cohort["root"] / "pseudo_slides.json").read_text())
    share = {s["slide_id"]: s["tumour_fraction"] for s in meta["slides"]}
    pd.DataFrame({"slide_id": rows["slide_id"], "patient_id": rows["patient_id"],
                  "label": [share[s] for s in rows["slide_id"]], "split": rows["split"]}).to_csv(path, index=False)
    return path


def _survival_labels(cohort, path):
    rows = pd.read_csv(cohort["labels"])
    rng = np.random.default_rng(0)
    tumour = (rows["label"] == "tumour").to_numpy()
    t = np.round(rng.exponential(np.where(tumour, 3.0, 20.0)), 2)
    pd.DataFrame({"slide_id": rows["slide_id"], "patient_id": rows["patient_id"], "time": t,
                  "event": (rng.uniform(size=len(rows)) < 0.8).astype(int), "split": rows["split"]}).to_csv(path, index=False)
    return path


def _regression_labels(cohort, path):
    frame = pd.read_csv(_proportion_labels(cohort, path))
    frame["label"] = frame["label"] * 100 + 0.5  # a percentage: regression
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("task, figure", [("survival", "kaplan_meier.png"), ("proportion", "scatter.png"),
                                          ("regression", "scatter.png")])
def test_report_of_survival_and_proportion_runs(mil_cohort, tmp_path, task, figure):
    from pathweak.report import write_report

    make = {"survival": _survival_labels, "proportion": _proportion_labels, "regression": _regression_labels}[task]
    labels = make(mil_cohort, tmp_path / f"{task}.csv")
    run = train_cohort([mil_cohort["features"]], labels, tmp_path / task, TrainConfig(head="abmil", task=task, **TINY),
                       progress=False)
    page = write_report(run.out_dir, slides=2)
    names = {p.name for p in images(page)}
    assert figure in names and "training_curves.png" in names and len([n for n in names if n.startswith("heatmap_")]) == 2
    score = {"survival": "risk", "proportion": "prob_positive", "regression": "prediction"}[task]
    assert f"per-tile <code>{score}</code>" in page.read_text()
    if task == "survival":
        assert "log-rank p =" in page.read_text()


def test_report_of_a_cohort_folder_uses_its_results_stores(binary_run, mil_cohort, tmp_path):
    out = tmp_path / "cohort_out"
    shutil.copytree(binary_run.out_dir, out / "models" / "abmil")
    predict_slides(out / "models" / "abmil", [mil_cohort["features"]], out, name="abmil", progress=False)
    (out / "summary.json").write_text(json.dumps({
        "cohort": "tiny", "slides": 12, "seconds": 1.0, "finished": "now",
        "where": {"model": str(out / "models" / "abmil"), "results": str(out / "results" / "abmil")}}))
    result = runner.invoke(app, ["report", str(out), "--slides", "2"])
    assert result.exit_code == 0, result.output
    page = out / "report.html"
    text = page.read_text()
    assert len(images(page)) >= 6 and "the one fold model averaged (in-sample" in text and "tiny (12 slides" in text


def test_report_of_a_folder_that_is_no_run_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "not a training run or cohort run" in lines[0]
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report_files").exists()


def test_report_renders_in_headless_chromium(binary_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium) - the headless browser check needs it")
    from pathweak.report import write_report

    page = write_report(binary_run.out_dir, slides=2)
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1280,2400", f"--screenshot={shot}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1280)
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    assert colours > 500, colours  # the figures and tiles were drawn, not just text on white
    # the page as the browser rendered it labels its numbers and heatmaps as out-of-fold
    dom = subprocess.run([*cmd[:-2], "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=180, check=False).stdout
    assert "<h2>Predictions per slide</h2>" in dom and "out-of-fold" in dom, dom[-2000:]
    assert len(re.findall(r"from the out-of-fold models seed0_fold0 averaged", dom)) == 2
    keep = Path(__file__).resolve().parents[2] / "runs" / "report_screenshot.png"  # for a person to look at
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)
