"""A cohort trained on a pathologist's corrections (``train: {instance_labels: PATH}``): the corrected model
goes beside the weak-only one, the corrections' content is part of the train stage's key, so a rerun with
the same files does nothing and new corrections redo only train, predict and heatmaps; the report shows
both models side by side."""

from __future__ import annotations

import json
import shutil

from test_cohort import TRAIN, cohort_data, reference, stores, write_spec  # noqa: F401  (module fixtures)

from pathweak.cohort import CohortSpec, run_cohort


def _corrections(cohort_data, folder, slides):
    """The sample cohort's QuPath tumour annotations (class "Tumor") as corrections of the label "tumour"."""
    folder.mkdir(parents=True, exist_ok=True)
    for sid in slides:
        text = (cohort_data / f"{sid}.tumour.geojson").read_text().replace('"Tumor"', '"tumour"')
        (folder / f"{sid}.geojson").write_text(text)


def test_corrections_retrain_only_when_they_change(cohort_data, reference, tmp_path):
    shutil.copytree(reference, tmp_path / "out")  # tiles, encoder and features of the uninterrupted run
    spec_path = write_spec(tmp_path, cohort_data)
    spec_path.write_text(spec_path.read_text() + TRAIN.format(epochs=2))
    weak = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), progress=False).stages}
    assert weak["train"].done == ["model"]
    out = tmp_path / "out"

    _corrections(cohort_data, tmp_path / "corrections", ["sample_00"])
    spec_path.write_text(spec_path.read_text().replace("bootstrap: 20}", "bootstrap: 20, instance_labels: corrections}"))
    first = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), progress=False).stages}
    assert first["train"].done == ["model"] and len(first["predict"].done) == 6 and len(first["heatmaps"].done) == 6
    assert not first["tile"].done and not first["extract"].done
    run = json.loads((out / "models" / "abmil-corrected" / "run.json").read_text())
    il = run["instance_labels"]
    assert list(il["per_slide"]) == ["sample_00"] and il["per_class"]["tumour"] > 0
    assert il["source"] == str(tmp_path / "corrections") and il["files"][0]["used"]["annotations"] >= 1
    assert (out / "models" / "abmil" / "run.json").exists()  # the weak-only model stays beside it
    assert (out / "results" / "abmil-corrected" / "sample_00.zarr").is_dir()
    report = (out / "report.html").read_text()
    assert "<h2>Corrections</h2>" in report and "weak labels only" in report and "abmil-corrected" in report

    # the same corrections again: nothing is trained, predicted or drawn again
    pngs = {p: p.stat().st_mtime_ns for p in (out / "heatmaps").rglob("*.png")}
    again = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), progress=False).stages}
    assert again["train"].skipped == ["model"] and not again["predict"].done and not again["heatmaps"].done
    assert {p: p.stat().st_mtime_ns for p in pngs} == pngs

    # new corrections: train, predict and heatmaps again; tiles and features are kept
    _corrections(cohort_data, tmp_path / "corrections", ["sample_02"])
    changed = {st.name: st for st in run_cohort(CohortSpec.load(spec_path), progress=False).stages}
    assert changed["train"].done == ["model"] and len(changed["predict"].done) == 6 and len(changed["heatmaps"].done) == 6
    assert not changed["tile"].done and not changed["extract"].done
    run = json.loads((out / "models" / "abmil-corrected" / "run.json").read_text())
    assert sorted(run["instance_labels"]["per_slide"]) == ["sample_00", "sample_02"]

    # the next round's review files, from the cohort's folder (its corrected model, out-of-fold)
    from pathweak.heatmap import export_review

    files = export_review(out, tmp_path / "review", queue=3, seed=0)
    assert len(files) == 6 and all(len(f.queue) == 3 and f.label in ("normal", "tumour") for f in files)


def test_missing_corrections_fail_before_any_work(cohort_data, tmp_path):
    import pytest

    from pathweak.errors import ConfigError

    spec_path = write_spec(tmp_path, cohort_data)
    spec_path.write_text(spec_path.read_text() + "train: {head: abmil, instance_labels: nowhere}\n")
    with pytest.raises(ConfigError, match="instance labels not found"):
        run_cohort(CohortSpec.load(spec_path), progress=False)
    assert not (tmp_path / "out").exists()


def test_corrections_with_label_augmentation_fail_before_any_work(cohort_data, tmp_path):
    import pytest

    from pathweak.errors import ConfigError

    corrections = tmp_path / "corrections"
    corrections.mkdir()
    (corrections / "sample_00.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    spec_path = write_spec(tmp_path, cohort_data)
    text = spec_path.read_text().replace("extract: {workers: 0}", "extract: {workers: 0, rotations: 4}")
    assert "rotations: 4" in text
    spec_path.write_text(text + f"train: {{head: abmil, instance_labels: {corrections}, label_augmentation: rotation}}\n")
    with pytest.raises(ConfigError, match="train: instance labels do not combine with label augmentation"):
        run_cohort(CohortSpec.load(spec_path), progress=False)
    assert not (tmp_path / "out").exists()
