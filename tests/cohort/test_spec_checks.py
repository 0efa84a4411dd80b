"""Cohort specs are checked before any work (docs/input_checks.md): a misspelt head or encoder, head options,
weights that are not on this machine, pretraining keys and the manifest's labels each fail at once with one
line naming the spec or the manifest, and nothing is tiled. As observed before: `train: {head: abmill}` tiled
and extracted the whole cohort before `unknown head`, a misspelt encoder printed one error per slide. Warnings
of a run (a slide without tiles) are in summary.json, summary.md and on stderr."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import assert_clean_failure, run_cli

from pathweak.cohort import CohortSpec, run_cohort
from pathweak.errors import PathweakError

SPEC = """manifest: {manifest}
out: {out}
encoder: {encoder}
weights: {weights}
extract: {{workers: 0}}
train: {train}
"""
TRAIN = "{head: abmil, folds: 2, max_epochs: 1, bootstrap: 0}"


def _spec(tmp_path: Path, manifest: Path, name: str = "cohort", encoder: str = "timm:vit_tiny_patch16_224",
          weights: str = "random:0", train: str = TRAIN, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(manifest=manifest, out=tmp_path / f"{name}_out", encoder=encoder, weights=weights,
                                train=train) + extra)
    return path


def _manifest(sample_cohort: Path, tmp_path: Path, change=None, name: str = "manifest.csv", bom: bool = False) -> Path:
    rows = list(csv.DictReader(open(sample_cohort / "labels.csv")))
    for r in rows:
        r["path"] = str(sample_cohort / r["path"])
    if change:
        change(rows)
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("key, value, phrase", [
    ("train", "{head: abmill, folds: 2}", "train: unknown head 'abmill'. Choose one of: abmil"),
    ("encoder", "timm:vit_tiny_patch16_22", "encoder: timm has no model 'vit_tiny_patch16_22'"),
])
def test_a_misspelt_head_or_encoder_fails_before_any_tiling(sample_cohort, tmp_path, key, value, phrase):
    spec = _spec(tmp_path, _manifest(sample_cohort, tmp_path), **{key: value})
    proc = run_cli("cohort", "run", str(spec), "--no-progress")
    assert proc.returncode == 2
    assert_clean_failure(proc, spec, tmp_path / "cohort_out", phrase)


@pytest.mark.parametrize("settings, where, phrase", [
    ({"train": "{head: abmil, folds: 2, head_options: {hiden: 8}}"}, "spec", "bad options for head 'abmil'"),
    ({"encoder": "uni3"}, "spec", "encoder: encoder name 'uni3' is neither a preset nor of the form family:name"),
    ({"encoder": "uni", "weights": "null"}, "spec", "encoder: no weights for uni on this machine"),
    ({"weights": "missing.pth"}, "weights", "weights file not found"),
    ({"encoder": "pathweak:no_encoder_here"}, "folder", "not a pathweak encoder folder"),
    ({"encoder": "timm:vit_tiny_patch16_224", "weights": "null"}, "spec", "needs local weights"),
])
def test_encoders_heads_and_weights_are_checked_when_the_run_starts(sample_cohort, tmp_path, monkeypatch, settings,
                                                                    where, phrase):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no hub cache: a preset's weights are not here
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec_path = _spec(tmp_path, _manifest(sample_cohort, tmp_path), **settings)
    spec = CohortSpec.load(spec_path)
    with pytest.raises(PathweakError) as err:
        run_cohort(spec, progress=False)
    named = {"spec": spec_path, "weights": tmp_path / "missing.pth", "folder": tmp_path / "no_encoder_here"}[where]
    assert str(err.value).startswith(f"{named.resolve()}: ") and phrase in str(err.value)
    assert not spec.out.exists()


def test_pretraining_keys_and_a_head_that_cannot_train_the_task(sample_cohort, tmp_path):
    spec = CohortSpec.load(_spec(tmp_path, _manifest(sample_cohort, tmp_path), extra="pretrain: {tiny: true, metod: mae}\n"))
    with pytest.raises(PathweakError, match="unknown SSLConfig key.*metod"):
        run_cohort(spec, progress=False)

    def survival(rows):
        for r in rows:
            r.update(time=str(10 + int(r["patient_id"][-1])), event=str(int(r["patient_id"][-1]) % 2))

    manifest = _manifest(sample_cohort, tmp_path, survival, "survival.csv")
    spec = CohortSpec.load(_spec(tmp_path, manifest, "ins", train="{head: ins, task: survival, folds: 2}"))
    with pytest.raises(PathweakError, match="train: the ins head learns from class pseudo-labels: it cannot train a survival"):
        run_cohort(spec, progress=False)
    assert not spec.out.exists()


def test_manifest_labels_and_rows_are_checked_before_any_tiling(sample_cohort, tmp_path):
    def nan(rows):
        rows[1]["label"] = "NaN"

    manifest = _manifest(sample_cohort, tmp_path, nan, "nan.csv")
    spec = CohortSpec.load(_spec(tmp_path, manifest, "nan"))
    with pytest.raises(PathweakError, match=f"{manifest}: row 3 has label 'NaN', a missing-value marker"):
        run_cohort(spec, progress=False)
    assert not spec.out.exists()

    def twice(rows):  # one file under two slide ids: tiled twice and counted twice in training
        rows[1]["path"] = rows[0]["path"]

    manifest = _manifest(sample_cohort, tmp_path, twice, "twice.csv")
    with pytest.raises(PathweakError, match="lines 2 and 3 name the same slide file sample_00.tiff"):
        CohortSpec.load(_spec(tmp_path, manifest, "twice"))
    bom = _manifest(sample_cohort, tmp_path, name="bom.csv", bom=True)  # saved by a spreadsheet
    assert bom.read_bytes().startswith(b"\xef\xbb\xbfslide_id")
    assert [s.slide_id for s in CohortSpec.load(_spec(tmp_path, bom, "bom")).slides] == [
        f"sample_0{i}" for i in range(4)]


def test_a_slide_without_tiles_is_warned_in_the_summary_and_on_stderr(sample_cohort, tmp_path):
    blank = tmp_path / "blank.tiff"  # a scan of empty glass
    tifffile.imwrite(blank, np.full((1024, 1024, 3), 244, np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")

    def add_blank(rows):
        rows.append({**rows[0], "slide_id": "blank", "patient_id": "patient_blank", "label": "", "path": str(blank)})

    spec = _spec(tmp_path, _manifest(sample_cohort, tmp_path, add_blank))
    proc = run_cli("cohort", "run", str(spec), "--stage", "tile", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "cohort_out"
    (warning,) = json.loads((out / "summary.json").read_text())["warnings"]
    assert warning.startswith(f"{out / 'tiles' / 'blank.zarr'}: no tiles: no tissue found on the slide")
    assert f"## Warnings\n\n- {warning}" in (out / "summary.md").read_text()
    assert f"warning: {warning}" in proc.stderr


@pytest.mark.parametrize("extract, train, phrase", [
    ("{workers: 0}", "{head: ins, folds: 2, label_augmentation: rotation}", "go together"),
    ("{workers: 0, rotations: 4}", TRAIN, "go together"),
    ("{workers: 0, rotations: 3}", "{head: ins, folds: 2, label_augmentation: rotation}", "extract: --rotations takes 2 or 4"),
    ("{workers: 0, rotations: 4}", "{head: clam_sb, folds: 2, label_augmentation: rotation}",
     "train: the clam_sb head cannot train with label augmentation"),
])
def test_rotation_views_and_label_augmentation_are_checked_together(sample_cohort, tmp_path, extract, train, phrase):
    path = _spec(tmp_path, _manifest(sample_cohort, tmp_path), train=train)
    path.write_text(path.read_text().replace("extract: {workers: 0}", f"extract: {extract}"))
    spec = CohortSpec.load(path)
    with pytest.raises(PathweakError, match=phrase) as err:
        run_cohort(spec, progress=False)
    assert str(err.value).startswith(f"{path.resolve()}: ")
    assert not spec.out.exists()
