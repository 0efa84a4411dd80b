"""The heatmap, export and ground-truth commands on a real slide's TileStore."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import SVS, need_shared, run_cli

from pathweak.heatmap import read_scores_csv, write_results
from pathweak.io.qupath_geojson import read_qupath_geojson
from pathweak.tiling import TileStore, tile_slide


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    need_shared(SVS)
    tmp = tmp_path_factory.mktemp("run")
    store = TileStore.open(tile_slide(SVS, tmp, progress=False).store)
    rng = np.random.default_rng(0)
    scores = {"attention": rng.random(len(store)), "tumor": rng.random(len(store))}
    return write_results(tmp / "results" / "CMU.zarr", store.coords, scores, tile_store=store.path,
                         slide_id=store.slide_id)


def test_help_lists_the_commands():
    out = run_cli("--help").stdout
    for cmd in ("heatmap", "export", "ground-truth"):
        assert cmd in out
    for opt in ("--format", "--store", "--score", "--region", "--downsample", "--smooth", "--cmap", "--mask-tissue"):
        assert opt in run_cli("export", "--help").stdout


def test_heatmap_writes_every_format(results, tmp_path):
    proc = run_cli("heatmap", str(results), "--out", str(tmp_path), "--region", "tumor>=0.5:Tumor", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["CMU-1-Small-Region.attention.png", "CMU-1-Small-Region.attention.tiff",
                     "CMU-1-Small-Region.geojson", "CMU-1-Small-Region.tumor.png", "CMU-1-Small-Region.tumor.tiff"]
    objs = read_qupath_geojson(tmp_path / "CMU-1-Small-Region.geojson")
    assert sum(o.object_type == "detection" for o in objs) == 54
    assert {o.classification for o in objs if o.object_type == "annotation"} == {"Tumor"}


def test_export_one_format_and_ground_truth(results, tmp_path):
    csv_path = tmp_path / "scores.csv"
    assert run_cli("export", str(results), "-f", "csv", "-o", str(csv_path)).returncode == 0
    store = results.parent.parent / "tiles" / "CMU-1-Small-Region.zarr"
    proc = run_cli("export", str(csv_path), "--store", str(store), "-f", "geojson", "-o", str(tmp_path / "t.geojson"),
                   "--score", "tumor", "--region", "tumor>=0.5:Tumor", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("ground-truth", str(store), str(tmp_path / "t.geojson"), "--class", "Tumor", "-o", str(tmp_path / "gt.csv"))
    assert proc.returncode == 0, proc.stderr
    truth, scores = read_scores_csv(tmp_path / "gt.csv"), read_scores_csv(csv_path)
    np.testing.assert_array_equal(truth.coords, scores.coords)
    assert ((truth.scores["Tumor"] > 0.99) == (scores.scores["tumor"] >= 0.5)).all()
    proc = run_cli("export", str(csv_path), "--store", str(store), "-f", "png", "--score", "tumor", "--cmap", "turbo",
                   "-o", str(tmp_path / "t.png"))
    assert proc.returncode == 0 and (tmp_path / "t.png").stat().st_size > 1000


def test_errors_are_one_line_and_leave_nothing(results, tmp_path):
    csv_path = tmp_path / "scores.csv"
    run_cli("export", str(results), "-f", "csv", "-o", str(csv_path))
    out = tmp_path / "out"
    proc = run_cli("export", str(csv_path), "-f", "png", "-o", str(out / "x.png"))
    assert proc.returncode == 2 and "does not say which TileStore" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = run_cli("export", str(results), "-f", "tiff", "-o", str(out / "x.tiff"))
    assert proc.returncode == 2 and "shows one score and there are 2" in proc.stderr
    proc = run_cli("export", str(results), "-f", "pdf", "-o", str(out / "x.pdf"))
    assert proc.returncode == 2 and "unknown export format 'pdf'" in proc.stderr
    proc = run_cli("heatmap", str(results), str(tmp_path / "missing.zarr"), "-o", str(out), "--no-progress")
    assert proc.returncode == 1 and "1 of 2 inputs failed" in proc.stderr and "missing.zarr" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "CMU-1-Small-Region.geojson", "CMU-1-Small-Region.attention.png", "CMU-1-Small-Region.tumor.png",
        "CMU-1-Small-Region.attention.tiff", "CMU-1-Small-Region.tumor.tiff"])


def test_exports_do_not_import_model_libraries(results, tmp_path):
    code = (
        "import sys; from pathweak_cli.main import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['heatmap', r'{results}', '-o', r'{tmp_path}', '-f', 'geojson', '-f', 'png', "
        "'-f', 'tiff', '--no-progress']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
