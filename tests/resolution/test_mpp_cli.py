"""info --estimate-mpp, tile --mpp estimate / --check-mpp / --strict-mpp on real slide pixels, and the
cohort summary's list of slides whose resolution disagrees with their pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from pathweak.io import open_slide
from pathweak.store.open import read_attrs

CMU_MPP = 0.499


def _write(svs: Path, path: Path, mpp: float | None) -> Path:
    """The real CMU-1 pixels as a tiled JPEG TIFF, with a resolution tag of ``mpp`` um/px (or none)."""
    import tifffile

    with open_slide(svs) as s:
        rgb = s.read_region((0, 0), 0, s.dimensions)
    extra = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="jpeg",
                     compressionargs={"level": 92}, **extra)
    return path


@pytest.fixture(scope="module")
def no_mpp(svs, tmp_path_factory) -> Path:
    path = _write(svs, tmp_path_factory.mktemp("mpp") / "no_mpp.tif", None)
    with open_slide(path) as s:
        assert s.mpp is None
    return path


@pytest.fixture(scope="module")
def wrong_mpp(svs, tmp_path_factory) -> Path:
    """A slide whose metadata says 4x the true pixel size (2.0 instead of 0.499 um/px)."""
    path = _write(svs, tmp_path_factory.mktemp("mpp") / "wrong_mpp.tif", 4 * CMU_MPP)
    with open_slide(path) as s:
        assert s.mpp_source == "metadata" and abs(s.mpp[0] - 4 * CMU_MPP) < 1e-6
    return path


def test_tile_mpp_estimate_records_the_source_and_range(no_mpp, tmp_path):
    refused = run_cli("tile", str(no_mpp), "-o", str(tmp_path / "a"), "--no-progress")
    assert refused.returncode == 2 and "--mpp" in refused.stderr  # no resolution: the usual refusal
    proc = run_cli("tile", str(no_mpp), "-o", str(tmp_path / "b"), "--mpp", "estimate", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    attrs = read_attrs(tmp_path / "b" / "tiles" / "no_mpp.zarr")
    mpp = attrs["mpp"]
    assert mpp["source"] == "estimated" and mpp["metadata"] is None
    est = mpp["estimate"]
    assert est["low"] < est["mpp"] < est["high"] and est["n_nuclei"] > 100
    assert mpp["level0"][0] == pytest.approx(est["mpp"], rel=1e-3)
    assert 1 / 1.3 <= mpp["level0"][0] / CMU_MPP <= 1.3
    assert attrs["tile"]["n_tiles"] > 20


def test_info_shows_both_resolutions_when_they_disagree(wrong_mpp, svs):
    proc = run_cli("info", str(wrong_mpp), "--estimate-mpp", "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["mpp"] == pytest.approx([4 * CMU_MPP] * 2) and meta["mpp_check"]["status"] == "disagrees"
    assert 1 / 1.3 <= meta["mpp_estimate"]["mpp"] / CMU_MPP <= 1.3
    table = run_cli("info", str(wrong_mpp), "--estimate-mpp")
    assert "DISAGREES" in table.stdout and "1.996 um/px" in table.stdout
    ok = json.loads(run_cli("info", str(svs), "--estimate-mpp", "--json").stdout)
    assert ok["mpp_check"]["status"] == "agrees"
    plain = json.loads(run_cli("info", str(svs), "--json").stdout)
    assert "mpp_estimate" not in plain  # nothing estimated unless asked


def test_strict_mpp_refuses_a_4x_wrong_slide_and_writes_nothing(wrong_mpp, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("tile", str(wrong_mpp), "-o", str(out), "--target-mpp", "2", "--strict-mpp", "--no-progress")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "disagrees" in lines[0] and str(wrong_mpp) in lines[0] and "more than 1.6x" in lines[0]
    assert not out.exists()


def test_check_mpp_warns_and_records_the_disagreement(wrong_mpp, tmp_path):
    from pathweak.cohort.summary import mpp_disagreements

    proc = run_cli("tile", str(wrong_mpp), "-o", str(tmp_path), "--target-mpp", "2", "--check-mpp", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning:") == 1 and "disagrees" in proc.stderr
    check = read_attrs(tmp_path / "tiles" / "wrong_mpp.zarr")["mpp"]["check"]
    assert check["status"] == "disagrees" and check["ratio"] > 3
    listed = mpp_disagreements(tmp_path / "tiles", ["wrong_mpp", "absent"])
    assert list(listed) == ["wrong_mpp"] and "recorded 1.996 um/px" in listed["wrong_mpp"]


def test_mpp_option_rejects_junk(svs, tmp_path):
    proc = run_cli("tile", str(svs), "-o", str(tmp_path / "x"), "--mpp", "fast", "--no-progress")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "estimate" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_info_estimate_and_tile_estimate_do_not_import_model_libraries(no_mpp, tmp_path):
    code = (
        "import sys; from pathweak_cli.main import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['info', r'{no_mpp}', '--estimate-mpp', '--json']); assert r.exit_code == 0, r.output; "
        f"r = CliRunner().invoke(app, ['tile', r'{no_mpp}', '-o', r'{tmp_path}', '--mpp', 'estimate', '--no-progress']); "
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_cohort_summary_lists_slides_whose_resolution_disagrees(svs, wrong_mpp, tmp_path):
    from pathweak.cohort.runner import run_cohort
    from pathweak.cohort.spec import CohortSpec

    (tmp_path / "manifest.csv").write_text(
        f"path,slide_id,patient_id,label\n{svs},good,p1,0\n{wrong_mpp},wrong,p2,1\n")
    spec = CohortSpec.from_dict({
        "name": "mpp", "manifest": "manifest.csv", "out": "out", "encoder": "timm:resnet18", "weights": "random",
        "tile": {"target_mpp": 2.0, "patch_px": 64, "mpp_check": "warn"},
    }, tmp_path)
    report = run_cohort(spec, stages=("tile",), workers=1, progress=False)
    assert not report.failed_slides
    summary = json.loads(report.summary_json.read_text())
    assert list(summary["mpp_disagreements"]) == ["wrong"]
    assert "Resolution disagreements" in report.summary_md.read_text() and "**wrong**" in report.summary_md.read_text()


def test_plain_tiling_estimates_nothing(svs, tmp_path):
    proc = run_cli("tile", str(svs), "-o", str(tmp_path), "--target-mpp", "2", "--patch", "64", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    mpp = read_attrs(tmp_path / "tiles" / "CMU-1-Small-Region.zarr")["mpp"]
    assert mpp["source"] == "metadata" and "estimate" not in mpp and "check" not in mpp
    assert "warning" not in proc.stderr
