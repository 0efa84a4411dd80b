"""Progress in a log: with stdout to a file (a cluster job's log), every long command writes one flushed
line per stage and per slide as it goes, and no progress bar. PYTHONUNBUFFERED is removed from the
environment, so only the command's own flushing puts the lines there while it runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, logged_env

STAMP = re.compile(r"^\d\d:\d\d:\d\d ")  # a progress line starts with the time of day
BAR = ("it/s", "s/it", "Epoch 0:", "\x1b[")  # a progress bar: rates, Lightning's epochs, terminal escapes


def run_logged(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``pathweak ARGS`` with stdout to a file (stderr captured); returns the process and the file's lines."""
    log = tmp_path / f"{args[0]}.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "pathweak_cli.main", *args],
            stdout=fh,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=logged_env(),
        )
    text = log.read_text()
    assert not any(b in text + proc.stderr for b in BAR), text[-2000:]
    return proc, text.splitlines()


def progress(lines: list[str]) -> list[str]:
    return [ln[9:] for ln in lines if STAMP.match(ln)]


def test_tile_and_extract_write_a_line_per_slide_to_a_log(sample_cohort, tmp_path):
    slides = sorted(sample_cohort.glob("*.tiff"))
    proc, lines = run_logged(tmp_path, "tile", str(sample_cohort), "-o", str(tmp_path / "run"), "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = progress(lines)
    for s in slides:
        assert any(ln.startswith(f"tile {s.stem}: tiled, ") and " tiles, " in ln for ln in lines), lines
    proc, lines = run_logged(
        tmp_path, "extract", str(tmp_path / "run" / "tiles"), "--encoder", "timm:vit_tiny_patch16_224",
        "--weights", "random:0", "-o", str(tmp_path / "run"), "--workers", "0",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = progress(lines)
    assert lines[0].startswith("embedding with ") and "started" in lines[0]
    for s in slides:
        assert any(ln.startswith(f"extract {s.stem}: extracted, ") for ln in lines), lines
    # with --json, stdout stays JSON and the lines go to stderr (when it is a file or a pipe too)
    proc = subprocess.run(
        [sys.executable, "-m", "pathweak_cli.main", "tile", str(sample_cohort), "-o", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, cwd=REPO, env=logged_env(), timeout=300,
    )
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == len(slides)
    assert sum(bool(STAMP.match(ln)) and ": skipped, " in ln for ln in proc.stderr.splitlines()) == len(slides)


def test_pretrain_writes_its_epochs_to_a_log_and_keeps_stdout_json(sample_cohort, tmp_path):
    tiles = tmp_path / "run"
    assert run_logged(tmp_path, "tile", str(sample_cohort), "-o", str(tiles))[0].returncode == 0
    log = tmp_path / "pretrain.err"
    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "pathweak_cli.main", "pretrain", str(tiles / "tiles"), "-o", str(tmp_path / "enc"),
             "--tiny", "--method", "mae", "--epochs", "2", "--batch-size", "8", "--img-size", "64", "--workers", "0"],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=logged_env(), timeout=600,
        )
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert json.loads(proc.stdout)["encoder"].startswith("pathweak:")  # stdout: the JSON only
    lines = progress(log.read_text().splitlines())
    assert lines[0].startswith("pretrain mae: ") and " tiles of 4 stores, 2 epochs" in lines[0]
    assert any(ln.startswith("pretrain mae epoch 0, step ") and "train_loss" in ln for ln in lines), lines


def test_train_predict_and_heatmap_write_a_line_per_fold_and_slide(mil_cohort, tmp_path):
    run = tmp_path / "abmil"
    proc, lines = run_logged(
        tmp_path, "train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]), "--head", "abmil",
        "-o", str(run), "--epochs", "3", "--min-epochs", "1", "--patience", "2", "--seed", "0", "--seed", "1",
        "--bootstrap", "10",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = progress(lines)
    folds = [ln for ln in lines if ln.startswith("train abmil seed ")]
    assert len(folds) == 2 and all("kept epoch" in ln for ln in folds), lines  # the split column: one fold a seed
    slides = sorted(p.stem for p in Path(mil_cohort["features"]).glob("*.zarr"))
    proc, lines = run_logged(tmp_path, "predict", str(mil_cohort["features"]), "--model", str(run), "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = progress(lines)
    assert [ln.split(":")[0] for ln in lines if ln.startswith("predict ")] == [f"predict {s}" for s in slides]
    results = sorted((tmp_path / "results").glob("*/*.zarr"))
    proc, lines = run_logged(tmp_path, "heatmap", *map(str, results[:3]), "-o", str(tmp_path / "maps"), "--json",
                             "-f", "png", "--score", "attention")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads("\n".join(lines))["files"]  # stdout is the JSON; the lines went to stderr
    err = [ln[9:] for ln in proc.stderr.splitlines() if STAMP.match(ln)]
    assert [ln.split(":")[0] for ln in err] == [f"heatmap {r}" for r in results[:3]]
