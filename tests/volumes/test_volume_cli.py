"""`pathweak info` and `pathweak tile` on volumes, and their errors: one clear line naming the file, the
problem and the fix; a non-zero exit; nothing left on disk."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

from conftest import ANATOMICAL, BRAIN1, BRAIN1_LABEL, FMRI_4D, assert_clean_failure, need_shared, run_cli


def test_info_on_volumes():
    need_shared(BRAIN1, FMRI_4D)
    proc = run_cli("info", str(BRAIN1), "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["format"] == "nrrd" and meta["shape_zyx"] == [25, 256, 256] and meta["source_axes"] == "LAS"
    proc = run_cli("info", str(FMRI_4D))
    assert proc.returncode == 0 and "timepoints" in proc.stdout


def test_tile_volumes_from_the_command_line(tmp_path):
    need_shared(BRAIN1, BRAIN1_LABEL, FMRI_4D)
    out = tmp_path / "out"
    proc = run_cli("tile", str(BRAIN1), "--out", str(out), "--label", str(BRAIN1_LABEL), "--spacing", "2",
                   "--patch", "16", "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["status"] == "tiled" and result["store"].endswith("pyradiomics_brain1_image.zarr")
    from pathweak.tiling import TileStore

    store = TileStore.open(result["store"])
    assert store.tile_shape == (16, 16, 16) and store.label_fraction.shape == (len(store), 1)
    assert store.attrs["volume"]["spacing"] == [2.0, 2.0, 2.0]
    proc = run_cli("tile", str(FMRI_4D), "--out", str(out), "--timepoint", "1", "--mode", "slices", "--patch", "64",
                   "--plane", "axial", "--plane", "coronal", "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    store = TileStore.open(json.loads(proc.stdout)[0]["store"])
    assert store.tile_shape == (64, 64, 3) and store.attrs["volume"]["source"]["timepoint"] == 1


def test_info_and_tile_on_volumes_import_no_model_library():
    need_shared(ANATOMICAL)
    code = (
        "import sys, tempfile; from pathweak_cli.main import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['info', r'{ANATOMICAL}', '--json']); assert r.exit_code == 0, r.output; "
        f"r = CliRunner().invoke(app, ['tile', r'{ANATOMICAL}', '--out', tempfile.mkdtemp(), '--no-progress']); "
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_4d_without_timepoint(tmp_path):
    need_shared(FMRI_4D)
    out = tmp_path / "out"
    proc = run_cli("tile", str(FMRI_4D), "--out", str(out))
    assert_clean_failure(proc, FMRI_4D, out, "4D series of 2 timepoints", "Pass --timepoint N (0..1)")
    assert proc.returncode == 2
    proc = run_cli("tile", str(FMRI_4D), "--out", str(out), "--timepoint", "7")
    assert_clean_failure(proc, FMRI_4D, out, "timepoint 7 is out of range", "--timepoint between 0 and 1")


def test_mismatched_label_geometry(tmp_path):
    import SimpleITK as sitk

    need_shared(ANATOMICAL, BRAIN1, BRAIN1_LABEL)
    out = tmp_path / "out"
    proc = run_cli("tile", str(ANATOMICAL), "--out", str(out), "--label", str(BRAIN1_LABEL))
    assert_clean_failure(proc, BRAIN1_LABEL, out, "does not lie on the grid of its image nibabel_anatomical.nii",
                          "shape (z, y, x) 25x41x33 vs 25x256x256", "Use the label map saved on the image's grid")
    # same size, shifted by 5 mm
    shifted = tmp_path / "shifted_label.nrrd"
    label = sitk.ReadImage(str(BRAIN1_LABEL))
    label.SetOrigin(tuple(o + d for o, d in zip(label.GetOrigin(), (0.0, 0.0, 5.0), strict=True)))
    sitk.WriteImage(label, str(shifted))
    proc = run_cli("tile", str(BRAIN1), "--out", str(out), "--label", str(shifted))
    assert_clean_failure(proc, shifted, out, "origin differs by 5 mm")


def test_unreadable_volume_files(tmp_path):
    need_shared(ANATOMICAL)
    out = tmp_path / "out"
    text = tmp_path / "scan.nii.gz"
    text.write_text("these are notes, not a scan\n" * 30)
    proc = run_cli("tile", str(text), "--out", str(out))
    assert_clean_failure(proc, text, out, "not a readable NIfTI file", "Check the file; pathweak reads NIfTI")
    assert run_cli("info", str(text)).returncode == 2
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(ANATOMICAL.read_bytes())[:30000])
    proc = run_cli("tile", str(cut), "--out", str(out))
    assert_clean_failure(proc, cut, out, "the voxel data cannot be read", "damaged or incomplete")
