"""Cohort runs: resume after SIGKILL, a corrupt slide reported, concurrent runs, Dask = local; the train,
predict and heatmap stages, their skipping and their re-running when settings change."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pathweak.cohort import CohortSpec, run_cohort
from pathweak.errors import LabelsError
from pathweak.features import FeatureStore
from pathweak.tiling import TileStore

SPEC = """name: test
manifest: {manifest}
out: {out}
pretrain: {{tiny: true, method: mae, max_epochs: 1, samples_per_epoch: 32, batch_size: 16, depth: 2, img_size: 64,
           num_workers: 0, rankme_samples: 16, seed: 0}}
extract: {{workers: 0}}
executor: {{kind: local, workers: {workers}}}
"""


@pytest.fixture(scope="module")
def cohort_data(tmp_path_factory):
    from pathweak.synthetic import make_sample_cohort

    data = tmp_path_factory.mktemp("cohort_data")
    make_sample_cohort(data, n_slides=6)
    return data


def write_spec(folder: Path, data: Path, out: str = "out", workers: int = 2, manifest: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "cohort.yaml"
    spec.write_text(SPEC.format(manifest=manifest or data / "labels.csv", out=folder / out, workers=workers))
    return spec


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pathweak_cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def stores(out: Path, kind: str) -> dict[str, Path]:
    folder = out / "tiles" if kind == "tiles" else next((out / "features").iterdir())
    return {p.stem: p for p in sorted(folder.glob("*.zarr"))}


def same_outputs(a: Path, b: Path) -> None:
    ta, tb = stores(a, "tiles"), stores(b, "tiles")
    assert ta.keys() == tb.keys()
    for k in ta:
        sa, sb = TileStore.open(ta[k]), TileStore.open(tb[k])
        assert np.array_equal(sa.coords, sb.coords) and np.array_equal(sa.read_tiles(slice(None)), sb.read_tiles(slice(None)))
    fa, fb = stores(a, "features"), stores(b, "features")
    assert fa.keys() == fb.keys() == ta.keys()
    for k in fa:
        assert np.array_equal(FeatureStore.open(fa[k]).features, FeatureStore.open(fb[k]).features)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the point to kill it"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference(cohort_data, tmp_path_factory):
    """An uninterrupted run of tile, pretrain and extract."""
    folder = tmp_path_factory.mktemp("reference")
    spec = CohortSpec.load(write_spec(folder, cohort_data))
    report = run_cohort(spec, stages=("tile", "pretrain", "extract"), progress=False)
    assert not report.failed_slides
    return folder / "out"


def test_sigkill_during_tiling_then_rerun(cohort_data, reference, tmp_path):
    spec = write_spec(tmp_path, cohort_data, workers=1)
    out = tmp_path / "out"
    proc = cli("cohort", "run", str(spec), "--stage", "tile", "--no-progress")
    kill_when(proc, lambda: len(list((out / "tiles").glob("*.zarr"))) >= 2 if (out / "tiles").exists() else False)
    finished = {p.name: (p / "zarr.json").stat().st_mtime_ns for p in (out / "tiles").glob("*.zarr")}
    assert 2 <= len(finished) < 6  # killed in the middle
    report = run_cohort(CohortSpec.load(spec), stages=("tile", "pretrain", "extract"), progress=False)
    assert not report.failed_slides
    tile_report = report.stages[0]
    assert set(tile_report.skipped) >= {n[:-5] for n in finished}  # completed slides are not redone
    for name, mtime in finished.items():
        assert (out / "tiles" / name / "zarr.json").stat().st_mtime_ns == mtime
    assert not [p for p in (out / "tiles").iterdir() if ".partial-" in p.name]
    same_outputs(out, reference)


def test_sigkill_during_extraction_then_rerun(cohort_data, reference, tmp_path):
    spec = write_spec(tmp_path, cohort_data, workers=1)
    out = tmp_path / "out"
    run_cohort(CohortSpec.load(spec), stages=("tile", "pretrain"), progress=False)
    proc = cli("cohort", "run", str(spec), "--stage", "extract", "--no-progress")

    def some_features() -> bool:
        feats = out / "features"
        return feats.exists() and any(len(list(d.glob("*.zarr"))) >= 1 for d in feats.iterdir())

    kill_when(proc, some_features)
    done = {p.name: (p / "zarr.json").stat().st_mtime_ns for p in stores(out, "features").values()}
    assert 1 <= len(done) < 6
    report = run_cohort(CohortSpec.load(spec), stages=("tile", "pretrain", "extract"), progress=False)
    assert not report.failed_slides
    folder = next((out / "features").iterdir())
    for name, mtime in done.items():
        assert (folder / name / "zarr.json").stat().st_mtime_ns == mtime
    same_outputs(out, reference)


def test_corrupt_slide_is_reported_and_the_others_finish(cohort_data, tmp_path):
    manifest = tmp_path / "manifest.csv"
    lines = (cohort_data / "labels.csv").read_text().splitlines()
    (tmp_path / "broken.svs").write_text("not a slide")
    rows = [lines[0]] + [",".join(r.split(",")[:3] + [str(cohort_data / r.split(",")[3])]) for r in lines[1:3]]
    rows.append(f"broken,patient_x,normal,{tmp_path / 'broken.svs'}")
    manifest.write_text("\n".join(rows) + "\n")
    spec = write_spec(tmp_path, cohort_data, manifest=manifest)
    report = run_cohort(CohortSpec.load(spec), stages=("tile", "pretrain", "extract"), progress=False)
    assert list(report.failed_slides) == ["broken"]
    assert "not a whole-slide image" in report.failed_slides["broken"]
    assert len(stores(tmp_path / "out", "features")) == 2
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "broken" in summary and "not a whole-slide image" in summary
    # a rerun leaves the failed slide alone unless asked to retry it
    again = run_cohort(CohortSpec.load(spec), stages=("tile",), progress=False)
    assert "broken" not in again.stages[0].failed and "broken" not in again.stages[0].done
    retry = run_cohort(CohortSpec.load(spec), stages=("tile",), retry_failed=True, progress=False)
    assert "broken" in retry.stages[0].failed


def test_two_concurrent_runs_do_not_clobber(cohort_data, reference, tmp_path):
    spec = write_spec(tmp_path, cohort_data, workers=1)
    a = cli("cohort", "run", str(spec), "--stage", "tile", "--stage", "pretrain", "--stage", "extract", "--no-progress")
    b = cli("cohort", "run", str(spec), "--stage", "tile", "--stage", "pretrain", "--stage", "extract", "--no-progress")
    for proc in (a, b):
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
    assert not list((tmp_path / "out").rglob("*.lock"))
    same_outputs(tmp_path / "out", reference)


def test_dask_executor_gives_the_same_outputs(cohort_data, reference, tmp_path):
    pytest.importorskip("distributed")
    spec = CohortSpec.load(write_spec(tmp_path, cohort_data))
    report = run_cohort(spec, executor="dask", workers=2, stages=("tile", "pretrain", "extract"), progress=False)
    assert not report.failed_slides
    same_outputs(tmp_path / "out", reference)


TRAIN = """train: {{head: abmil, folds: 2, seeds: [0], max_epochs: {epochs}, min_epochs: 1, patience: 3, bootstrap: 20}}
heatmaps: {{formats: [png, geojson]}}
"""


def test_full_run_trains_predicts_and_draws_heatmaps_then_skips_and_follows_changes(cohort_data, reference, tmp_path):
    shutil.copytree(reference, tmp_path / "out")  # tiles, encoder and features of the uninterrupted run
    spec_path = write_spec(tmp_path, cohort_data)
    spec_path.write_text(spec_path.read_text() + TRAIN.format(epochs=3))
    report = run_cohort(CohortSpec.load(spec_path), progress=False)
    assert not report.failed_slides
    by_name = {st.name: st for st in report.stages}
    assert by_name["tile"].skipped and not by_name["tile"].done and not by_name["extract"].done
    assert by_name["train"].done == ["model"] and len(by_name["predict"].done) == 6 and len(by_name["heatmaps"].done) == 6
    out = tmp_path / "out"
    run = json.loads((out / "models" / "abmil" / "run.json").read_text())
    assert run["labels"]["slides"] == 6 and len(run["seeds"]["0"]["folds"]) == 2
    for sid in stores(out, "tiles"):
        assert (out / "results" / "abmil" / f"{sid}.zarr").is_dir()
        geojson = json.loads((out / "heatmaps" / sid / f"{sid}.geojson").read_text())
        assert geojson["features"] and "measurements" in geojson["features"][0]["properties"]
        assert (out / "heatmaps" / sid / f"{sid}.prob_tumour.png").stat().st_size > 0
        assert (out / "heatmaps" / sid / f"{sid}.attention.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "## Cross-validation" in summary and str(out / "heatmaps") in summary and "| auc |" in summary
    states = json.loads((out / "state" / "sample_00.json").read_text())["stages"]
    assert {"tile", "extract", "predict", "heatmaps"} <= set(states)

    # nothing changed: every stage skips
    pngs = {p: p.stat().st_mtime_ns for p in (out / "heatmaps").rglob("*.png")}
    again = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), progress=False).stages}
    assert again["train"].skipped == ["model"] and not again["predict"].done and not again["heatmaps"].done
    assert {p: p.stat().st_mtime_ns for p in pngs} == pngs
    assert again["report"].skipped == ["report"]  # written from the same model, predictions and stage times
    # the report's cohort row gives the time the results took (each stage's time in the run that made it),
    # not a rerun's few seconds, and says which stages that run found up to date
    stages = json.loads((out / "state" / "timings.json").read_text())
    assert {"train", "predict", "heatmaps"} <= set(stages) and stages["train"] > 0
    row = re.search(r"<th>cohort</th><td>(.*?)</td>", (out / "report.html").read_text()).group(1)
    took = float(re.search(r"results made in ([\d.]+) s", row).group(1))
    assert took == pytest.approx(sum(stages.values()), abs=0.11) and "skipping tile, pretrain, extract" in row, row
    assert float(re.search(r"this run took ([\d.]+) s", row).group(1)) < took

    # a training setting changed: train, predict and heatmaps are redone, tiles and features are not
    spec_path.write_text(spec_path.read_text().replace("max_epochs: 3", "max_epochs: 4"))
    changed = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), progress=False).stages}
    assert changed["train"].done == ["model"] and len(changed["predict"].done) == 6 and len(changed["heatmaps"].done) == 6
    assert not changed["tile"].done and not changed["extract"].done
    # a deleted heatmap is redrawn for its slide only
    (out / "heatmaps" / "sample_01" / "sample_01.geojson").unlink()
    redrawn = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), stages=("heatmaps",), progress=False).stages}
    assert redrawn["heatmaps"].done == ["sample_01"]
    assert (out / "heatmaps" / "sample_01" / "sample_01.geojson").exists()

    # more folds than patients: refused before any work, naming the manifest (docs/input_checks.md)
    before = {p: p.stat().st_mtime_ns for p in [*(out / "heatmaps").rglob("*.*"), *(out / "results").rglob("*.csv")]}
    spec_path.write_text(spec_path.read_text().replace("folds: 2", "folds: 9"))
    with pytest.raises(LabelsError, match=f"{cohort_data / 'labels.csv'}: 5 patients cannot fill 9 folds"):
        run_cohort(CohortSpec.load(spec_path), progress=False)
    # training fails (a features chunk damaged on disk since it was written): the run says so and stops
    # there, so nothing is predicted or drawn with the model left from the previous run
    spec_path.write_text(spec_path.read_text().replace("folds: 9", "folds: 2").replace("bootstrap: 20", "bootstrap: 21"))
    chunk = next(p for p in (stores(out, "features")["sample_00"] / "features").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    failed = run_cohort(CohortSpec.load(spec_path), progress=False)
    assert "sample_00.zarr" in failed.failed_slides["model"]
    assert [st.name for st in failed.stages] == ["tile", "pretrain", "extract", "train"]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_bad_stage_settings_fail_when_the_spec_is_read(cohort_data, tmp_path):
    from pathweak.errors import ConfigError

    spec_path = write_spec(tmp_path, cohort_data)
    spec_path.write_text(spec_path.read_text() + "train: {head: abmil, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match="unknown TrainConfig key.*learning_rate"):
        CohortSpec.load(spec_path)
    spec_path = write_spec(tmp_path / "b", cohort_data)
    spec_path.write_text(spec_path.read_text() + "heatmaps: {formats: [png, svg]}\n")
    with pytest.raises(ConfigError, match="unknown heatmap format.*svg"):
        CohortSpec.load(spec_path)


def test_survival_cohort_trains_on_time_and_event_and_predicts_risks(cohort_data, reference, tmp_path):
    import csv

    shutil.copytree(reference, tmp_path / "out")
    rows = list(csv.DictReader(open(cohort_data / "labels.csv")))
    manifest = tmp_path / "survival.csv"
    with open(manifest, "w", newline="") as fh:  # time and event instead of label
        w = csv.writer(fh)
        w.writerow(["path", "slide_id", "patient_id", "time", "event"])
        for r in rows:  # one outcome per patient (docs/input_checks.md); patients 0 and 2 have the event
            p = int(r["patient_id"].rsplit("_", 1)[1])
            w.writerow([str((cohort_data / r["path"]).resolve()), r["slide_id"], r["patient_id"],
                        12 + 7 * p, int(p % 2 == 0)])
    spec_path = write_spec(tmp_path, cohort_data, manifest=manifest)
    spec_path.write_text(spec_path.read_text() + "train: {head: abmil, task: survival, survival_loss: discrete, "
                         "folds: 2, seeds: [0], max_epochs: 2, min_epochs: 1, bootstrap: 10}\n")
    report = run_cohort(CohortSpec.load(spec_path), stages=("train", "predict"), progress=False)
    assert not report.failed_slides, report.failed_slides
    out = tmp_path / "out"
    labels = list(csv.DictReader(open(out / "labels.csv")))
    assert set(labels[0]) == {"slide_id", "patient_id", "time", "event"} and len(labels) == len(rows)
    run = json.loads((out / "models" / "abmil" / "run.json").read_text())
    assert run["task"] == "survival" and "c_index" in " ".join(run["metrics"])
    assert "c_index" in (out / "summary.md").read_text()
    assert len(list((out / "results" / "abmil").glob("*.zarr"))) == len(rows)

    # a survival spec over a manifest without time and event fails when it is read, naming the manifest
    from pathweak.errors import ConfigError

    plain = write_spec(tmp_path / "plain", cohort_data)
    plain.write_text(plain.read_text() + "train: {task: survival}\n")
    with pytest.raises(ConfigError, match="time and event") as err:
        CohortSpec.load(plain)
    assert str(cohort_data / "labels.csv") in str(err.value)
