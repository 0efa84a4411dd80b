"""Real CLI runs of the convention on small real inputs: positional inputs and the deprecated spellings,
the one precedence rule (flag > config file > default), -o/--out and --json, and no progress bar in a
log."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import run_cli

LIGHTNING_BAR = ("it/s", "s/it", "Epoch 0:", "━")


def warnings_of(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]


@pytest.fixture(scope="module")
def svs_tiles(svs, tmp_path_factory):
    """The real CMU-1-Small-Region slide tiled (54 tiles of 224 px) through the CLI."""
    out = tmp_path_factory.mktemp("svs")
    proc = run_cli("tile", str(svs), "-o", str(out), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out / "tiles"


def test_pretrain_flag_beats_file_beats_default_and_logs_no_progress_bar(svs_tiles, tmp_path):
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(
        "ssl:\n  method: mae\n  img_size: 64\n  mask_ratio: 0.6\n  batch_size: 8\n  depth: 2\n"
        "  samples_per_epoch: 16\n  rankme_samples: 16\n  num_workers: 0\n  max_epochs: 1\n"
    )
    out = tmp_path / "enc"
    # --mask-ratio given: beats the file; --method and --img-size left out: the file's, not the defaults
    # (dino, and --tiny's 112); --progress left on, but stderr is a pipe: no bar in it
    proc = run_cli("pretrain", str(svs_tiles), "-o", str(out), "--config", str(cfg), "--tiny", "--mask-ratio", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["encoder"] == f"pathweak:{out}"
    used = json.loads((out / "encoder.json").read_text())["training"]["config"]
    assert used["mask_ratio"] == 0.5  # flag > file
    assert used["method"] == "mae" and used["img_size"] == 64 and used["depth"] == 2  # file > default
    assert used["arch"] == "vit_tiny" and used["local_crops"] == 2  # default (--tiny's), in neither
    assert not [mark for mark in LIGHTNING_BAR if mark in proc.stderr], proc.stderr[-2000:]
    assert not warnings_of(proc), proc.stderr


def test_pretrain_cpu_preset_and_select_last(svs_tiles, tmp_path):
    """--cpu starts from SSLConfig.cpu() (file and flags still win), --select last exports the final
    weights; --tiny and --cpu together are refused with one line."""
    both = run_cli("pretrain", str(svs_tiles), "-o", str(tmp_path / "x"), "--tiny", "--cpu")
    assert both.returncode == 2 and "--tiny and --cpu" in both.stderr and "Traceback" not in both.stderr
    assert not (tmp_path / "x").exists()
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text("ssl:\n  batch_size: 8\n  samples_per_epoch: 16\n  rankme_samples: 16\n  num_workers: 0\n")
    out = tmp_path / "enc"
    proc = run_cli("pretrain", str(svs_tiles), "-o", str(out), "--config", str(cfg), "--cpu", "--method", "mae",
                   "--select", "last", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    used = json.loads((out / "encoder.json").read_text())["training"]["config"]
    assert (used["select"], used["method"], used["batch_size"]) == ("last", "mae", 8)  # flags and file
    assert (used["depth"], used["img_size"], used["mask_ratio"]) == (4, 64, 0.75)  # --cpu's, in neither


def test_extract_takes_stores_as_arguments_and_the_old_spelling_warns(svs_tiles, tmp_path):
    none = run_cli("extract", "-o", str(tmp_path), "--encoder", "timm:vit_tiny_patch16_224")
    assert none.returncode == 2 and "error: no TileStores given" in none.stderr and "Traceback" not in none.stderr
    args = ["--encoder", "timm:vit_tiny_patch16_224", "--weights", "random:0", "--workers", "0", "--json", "--no-progress"]
    new = in_process("extract", str(svs_tiles), "-o", str(tmp_path), *args)
    assert new.exit_code == 0, new.output[-2000:]
    (row,) = json.loads(new.stdout)
    assert row["status"] == "extracted" and row["n_tiles"] == 54 and not new.warnings
    old = in_process("extract", "--stores", str(svs_tiles), "-o", str(tmp_path), *args)
    assert old.exit_code == 0, old.output[-2000:]
    assert json.loads(old.stdout)[0]["status"] == "skipped"  # the same store, the same key: up to date
    assert old.warnings == [
        "warning: --stores is deprecated and will be removed in the next release; give the TileStores as arguments"
    ]


def in_process(*args: str):
    """``main(argv)`` through Typer's runner, in this process (torch is imported once for the module)."""
    from typer.testing import CliRunner

    from pathweak_cli.main import app

    result = CliRunner().invoke(app, list(args))
    result.warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    return result


def test_train_predict_report_with_positional_features_and_repeated_lists(mil_cohort, tmp_path):
    """In this process, on the real-tile cohort."""
    cli = in_process
    features, labels = str(mil_cohort["features"]), str(mil_cohort["labels"])
    fast = ["--epochs", "2", "--min-epochs", "1", "--bootstrap", "0", "--device", "cpu", "--no-progress", "--json"]
    run = tmp_path / "run"
    res = cli("train", features, "--labels", labels, "-o", str(run), "--head", "mean",
              "--seed", "0", "--seed", "1", "--class", "tumour", "--class", "normal", *fast)  # fmt: skip
    assert res.exit_code == 0, res.output[-3000:]
    assert json.loads(res.stdout)["classes"] == ["tumour", "normal"] and not res.warnings
    assert sorted(json.loads((run / "run.json").read_text())["seeds"]) == ["0", "1"]
    # the old spellings: --features, comma lists of --seeds and --classes
    old = cli("train", "--features", features, "--labels", labels, "-o", str(tmp_path / "old"), "--head", "mean",
              "--seeds", "0,1", "--classes", "tumour,normal", *fast)  # fmt: skip
    assert old.exit_code == 0, old.output[-3000:]
    assert json.loads(old.stdout)["classes"] == ["tumour", "normal"]
    assert sorted(json.loads((tmp_path / "old" / "run.json").read_text())["seeds"]) == ["0", "1"]
    assert {w.split()[1] for w in old.warnings} == {"--features", "--seeds", "--classes"}
    bad = cli("train", features, "--labels", labels, "-o", str(tmp_path / "bad"), "--seed", "x", *fast)
    assert bad.exit_code == 2 and "--seed takes integers" in bad.stderr and not (tmp_path / "bad").exists()

    pred = cli("predict", features, "--model", str(run), "-o", str(tmp_path), "--name", "m", "--json", "--no-progress")
    assert pred.exit_code == 0, pred.output[-3000:]
    assert len(json.loads(pred.stdout)) == 12 and len(list((tmp_path / "results" / "m").glob("*.zarr"))) == 12

    elsewhere = tmp_path / "report"
    rep = cli("report", str(run), "-o", str(elsewhere), "--slides", "1", "--tiles", "2", "--bootstrap", "5", "--json")
    assert rep.exit_code == 0, rep.output[-3000:]
    assert json.loads(rep.stdout) == {"report": str(elsewhere / "report.html")}
    assert (elsewhere / "report.html").stat().st_size > 0 and not (run / "report.html").exists()


def test_json_and_out_of_the_export_commands(sample_cohort, tmp_path):
    slide = sample_cohort / "sample_00.tiff"
    tiled = run_cli("tile", str(slide), "-o", str(tmp_path), "--json", "--no-progress")
    assert tiled.returncode == 0, tiled.stderr
    store = json.loads(tiled.stdout)[0]["store"]
    gt = tmp_path / "gt.csv"
    proc = run_cli("ground-truth", store, str(sample_cohort / "sample_00.tumour.geojson"), "-o", str(gt), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"files": [str(gt)]} and gt.stat().st_size > 0
    png = tmp_path / "gt.png"
    proc = run_cli("export", str(gt), "--store", store, "-f", "png", "-o", str(png), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"files": [str(png)]} and png.stat().st_size > 0
    maps = run_cli("heatmap", str(gt), "--store", store, "-f", "geojson", "-o", str(tmp_path / "maps"), "--json",
                   "--no-progress")  # fmt: skip
    assert maps.returncode == 0, maps.stderr
    (written,) = json.loads(maps.stdout)["files"]
    assert written.endswith(".geojson") and (tmp_path / "maps").is_dir()


def test_sample_data_out_and_the_old_positional(tmp_path):
    proc = run_cli("sample-data", "-o", str(tmp_path / "a"), "--n-slides", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    (slide,) = json.loads(proc.stdout)["slides"]
    assert slide["slide_id"] == "sample_00" and (tmp_path / "a" / "labels.csv").exists() and not warnings_of(proc)
    old = run_cli("sample-data", str(tmp_path / "a"), "--n-slides", "1")  # the slide exists: kept, not redrawn
    assert old.returncode == 0 and "1 slides" in old.stdout
    assert len(warnings_of(old)) == 1 and "-o/--out" in warnings_of(old)[0]


def test_cohort_run_out_and_repeated_stage(sample_cohort, tmp_path):
    spec = tmp_path / "cohort.yaml"
    spec.write_text(
        f"name: t\nmanifest: {sample_cohort / 'labels.csv'}\nout: {tmp_path / 'spec_out'}\n"
        "encoder: timm:vit_tiny_patch16_224\nweights: random:0\nexecutor: {kind: local, workers: 1}\n"
    )
    moved = tmp_path / "moved"
    proc = run_cli("cohort", "run", str(spec), "--stage", "tile", "-o", str(moved), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)  # summary.json
    assert len(list((moved / "tiles").glob("*.zarr"))) == 4 and not (tmp_path / "spec_out").exists()
    status = run_cli("cohort", "status", str(spec), "-o", str(moved), "--json")
    assert status.returncode == 0, status.stderr
    assert {s["tile"] for s in json.loads(status.stdout).values()} == {"done"}
    old = run_cli("cohort", "run", str(spec), "--stages", "tile", "-o", str(moved), "--no-progress")
    assert old.returncode == 0 and len(warnings_of(old)) == 1 and "--stage" in warnings_of(old)[0]


def test_tile_planes_repeated_and_the_old_comma_list(tmp_path):
    from conftest import FMRI_4D, need_shared

    need_shared(FMRI_4D)
    base = ["--timepoint", "1", "--mode", "slices", "--patch", "64", "--json", "--no-progress"]
    two = run_cli("tile", str(FMRI_4D), "-o", str(tmp_path / "a"), "--plane", "axial", "--plane", "coronal", *base)
    one = run_cli("tile", str(FMRI_4D), "-o", str(tmp_path / "b"), *base)  # the default: axial
    old = run_cli("tile", str(FMRI_4D), "-o", str(tmp_path / "c"), "--planes", "axial,coronal", *base)
    assert two.returncode == one.returncode == old.returncode == 0, (two.stderr, one.stderr, old.stderr)
    n = {k: json.loads(p.stdout)[0]["n_tiles"] for k, p in (("two", two), ("one", one), ("old", old))}
    assert n["two"] == n["old"] > n["one"] > 0
    assert not warnings_of(two) and len(warnings_of(old)) == 1 and "use --plane" in warnings_of(old)[0]
