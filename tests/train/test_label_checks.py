"""Labels that read fine but cannot mean what the user wanted (docs/input_checks.md): missing-value markers
as classes, one class spelt two ways, one patient with two survival outcomes, a class that no fold can
learn or test, and labels given as a DataFrame. Each is refused with one line naming the rows, or recorded
as a warning in run.json and printed by the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import assert_clean_failure, run_cli

from pathweak.errors import LabelsError
from pathweak.train import TrainConfig, make_folds, read_labels, train_cohort

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = {"max_epochs": 1, "min_epochs": 1, "bootstrap": 0, "device": "cpu", "seeds": (0,)}
CLI_QUICK = ["--epochs", "1", "--min-epochs", "1", "--bootstrap", "0", "--device", "cpu", "--no-progress"]


def _write(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _cohort_labels(mil_cohort, tmp_path, name, change) -> tuple[pd.DataFrame, object]:
    """The real cohort's labels with ``change(frame)`` applied, written as ``name``."""
    frame = pd.read_csv(mil_cohort["labels"]).drop(columns=["path"])
    change(frame)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return frame, path


# -- missing values and spellings ---------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["NaN", "nan", "NA", "N/A", "null", "None"])
def test_missing_value_markers_are_not_classes(tmp_path, marker):
    path = _write(tmp_path, f"slide_id,patient_id,label\na,p1,tumour\nb,p2,{marker}\nc,p3,normal\nd,p4,{marker}\n")
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    msg = str(err.value)
    assert f"rows 3, 5 have label {marker!r}, a missing-value marker" in msg and str(path) in msg and "\n" not in msg
    assert read_labels(path, classes=["normal", "tumour", marker]).classes == ["normal", "tumour", marker]  # on purpose


def test_a_missing_patient_id_does_not_group_slides_into_one_patient(tmp_path):
    path = _write(tmp_path, "slide_id,patient_id,label\na,NA,x\nb,NA,y\nc,p3,x\n")
    with pytest.raises(LabelsError, match="rows 2, 3 have patient_id 'NA', a missing-value marker"):
        read_labels(path)


@pytest.mark.parametrize("a, b", [("Tumour", "tumour"), ("tumour", "tu mour"), ("high grade", "High  Grade"),
                                  ("1", "1.0")])
def test_one_class_spelt_two_ways_is_refused_naming_the_rows(tmp_path, a, b):
    path = _write(tmp_path, f"slide_id,patient_id,label\ns1,p1,{a}\ns2,p2,other\ns3,p3,{b}\ns4,p4,{a}\n")
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    msg = str(err.value)
    assert f"labels {a!r} (rows 2, 5) and {b!r} (row 4) differ only in case, spacing or number format" in msg
    assert str(path) in msg and "\n" not in msg
    table = read_labels(path, classes=[a, b, "other"])  # listed with --class: different classes on purpose
    assert table.classes == [a, b, "other"] and table.targets.tolist() == [0, 2, 1, 0]


def test_cli_refuses_nan_and_case_variants_before_training(mil_cohort, tmp_path):
    """As observed: NaN labels and `Tumour`/`tumour` trained a 3-class model with exit 0."""
    def nan(frame):
        frame.loc[[0, 4, 8], "label"] = "NaN"
        frame.pop("split")  # cross-validation, as in the report

    def case(frame):
        frame.loc[[2, 6], "label"] = "Tumour"
        frame.pop("split")

    for name, change, phrase in [("nan.csv", nan, "rows 2, 6, 10 have label 'NaN', a missing-value marker"),
                                 ("case.csv", case, "labels 'Tumour' (rows 4, 8) and 'tumour' (rows 5, 9, 12, 13)")]:
        _, labels = _cohort_labels(mil_cohort, tmp_path, name, change)
        out = tmp_path / f"run_{name}"
        proc = run_cli("train", str(mil_cohort["features"]), "--labels", str(labels), "-o", str(out), "--folds", "2",
                       *CLI_QUICK)
        assert proc.returncode == 2
        assert_clean_failure(proc, labels, out, phrase)


# -- survival -----------------------------------------------------------------------------------------------


def test_one_patient_with_two_survival_outcomes(tmp_path):
    events = _write(tmp_path, "slide_id,patient_id,time,event\na,p1,12,1\nb,p1,12,0\nc,p2,3,1\n")
    with pytest.raises(LabelsError, match=r"patient 'p1' has slides with event 1 and event 0 \(rows 2, 3\)"):
        read_labels(events, task="survival")
    times = _write(tmp_path, "slide_id,patient_id,time,event\na,p1,12,1\nb,p1,30,1\nc,p2,3,1\nd,p3,0,0\n", "t.csv")
    table = read_labels(times, task="survival")
    assert len(table.warnings) == 2
    assert "patient 'p1' has slides with different follow-up times (12, 30; rows 2, 3)" in table.warnings[0]
    assert "row 5 is censored at time 0" in table.warnings[1] and str(times) in table.warnings[1]
    same = _write(tmp_path, "slide_id,patient_id,time,event\na,p1,12,1\nb,p1,12,1\nc,p2,3,0\n", "same.csv")
    assert read_labels(same, task="survival").warnings == []


# -- splits that leave a class out --------------------------------------------------------------------------


def test_a_class_without_training_slides_is_refused(tmp_path):
    text = "slide_id,patient_id,label,split\n" + "".join(
        f"s{i},p{i},{'a' if i < 8 else 'b'},{'train' if i < 8 else 'test'}\n" for i in range(12))
    with pytest.raises(LabelsError, match="class 'b' has no slide marked train in the split column"):
        make_folds(read_labels(_write(tmp_path, text)))


def test_a_test_split_without_a_class_is_warned_in_run_json_and_on_the_cli(mil_cohort, tmp_path):
    """As observed: a split column whose test slides are all tumour printed balanced accuracy 0 and no AUC
    without a word."""
    def tumour_test_only(frame):
        frame.loc[frame["slide_id"].isin(["test_000", "test_001"]), "split"] = "train"

    from pathweak.train.splits import fold_warnings

    _, labels = _cohort_labels(mil_cohort, tmp_path, "split.csv", tumour_test_only)
    table = read_labels(labels)
    (warning,) = fold_warnings(make_folds(table), table)
    assert "the split column's test slides have no slide of class 'normal'" in warning and str(labels) in warning
    out = tmp_path / "run"
    proc = run_cli("train", str(mil_cohort["features"]), "--labels", str(labels), "-o", str(out), *CLI_QUICK)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {warning}" in proc.stderr
    assert json.loads((out / "run.json").read_text())["warnings"] == [warning]


# -- a DataFrame instead of a path --------------------------------------------------------------------------


def test_train_cohort_takes_a_dataframe_and_keeps_it_in_the_run(mil_cohort, tmp_path):
    frame = pd.read_csv(mil_cohort["labels"])
    run = train_cohort([mil_cohort["features"]], frame, tmp_path / "run", TrainConfig(head="mean", **QUICK),
                       progress=False)
    kept = run.out_dir / "labels.csv"
    assert run.summary["labels"]["path"] == str(kept.resolve()) and run.summary["labels"]["slides"] == len(frame)
    assert pd.read_csv(kept).equals(frame)
    bad = frame.assign(label=frame["label"].where(frame.index != 3, None))  # a missing value in the frame
    with pytest.raises(LabelsError, match="<labels DataFrame>: row 5 has an empty label"):
        train_cohort([mil_cohort["features"]], bad, tmp_path / "bad", TrainConfig(**QUICK), progress=False)
    with pytest.raises(LabelsError, match="labels must be a CSV path or a pandas DataFrame, not a list"):
        train_cohort([mil_cohort["features"]], [["train_000", "p", "x"]], tmp_path / "list", TrainConfig(**QUICK),
                     progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "list").exists()
