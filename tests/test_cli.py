"""The command line: info, tile, sample-data and the README's demo command."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import run_cli, watch_log


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("info", "tile", "sample-data", "demo"):
        assert cmd in proc.stdout
    tile_help = run_cli("tile", "--help").stdout
    for opt in ("--target-mpp", "--patch", "--overlap", "--backend", "--mpp", "--workers", "--jpeg-quality", "--lossless", "--roi"):
        assert opt in tile_help


def test_info_json(svs):
    proc = run_cli("info", str(svs), "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["dimensions"] == [2220, 2967] and meta["mpp_source"] == "metadata" and meta["vendor"] == "aperio"
    table = run_cli("info", str(svs))
    assert table.returncode == 0 and "aperio" in table.stdout


def test_info_does_not_import_model_libraries(svs):
    code = (
        "import sys; from pathweak_cli.main import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['info', r'{svs}', '--json']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_light_commands_stay_light(svs):
    """`info` on a slide loads no Zarr (the volume check used to pull in the whole volume tiler), and
    `encoders list` / `encoders info` load no torch (benchmarks/startup.py times them)."""
    def loaded(args: list[str], modules: tuple[str, ...]) -> list[str]:
        code = (
            "import sys; from pathweak_cli.main import app; from typer.testing import CliRunner; "
            f"r = CliRunner().invoke(app, {args!r}); assert r.exit_code == 0, r.output; "
            f"import json; print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert loaded(["info", str(svs), "--json"], ("zarr", "torch", "pathweak.volumes.tiler")) == []
    assert loaded(["encoders", "list"], ("torch", "timm", "lightning")) == []
    assert loaded(["encoders", "info", "uni"], ("torch", "timm", "lightning")) == []


def test_version():
    import re

    from conftest import REPO

    proc = run_cli("--version")
    want = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert proc.returncode == 0 and proc.stdout.strip() == f"pathweak {want}", proc.stdout + proc.stderr


def test_tile_with_config_and_glob(svs, tmp_path):
    cfg = tmp_path / "tiling.yaml"
    cfg.write_text("tile:\n  patch_px: 128\n  min_tissue: 0.5\nstore:\n  compression: lossless\n")
    proc = run_cli("tile", str(svs.parent / "CMU-*.svs"), "--out", str(tmp_path), "--config", str(cfg), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["status"] == "tiled"
    from pathweak.tiling import TileStore

    with TileStore.open(result["store"]) as store:
        assert store.tile_px == 128 and store.compression == "lossless"
        assert (store.tissue_fraction >= 0.5).all()
    # an option given on the command line wins over the file
    proc = run_cli("tile", str(svs), "--out", str(tmp_path), "--config", str(cfg), "--patch", "96", "--json", "--no-progress")
    with TileStore.open(json.loads(proc.stdout)[0]["store"]) as store:
        assert store.tile_px == 96
    bad = tmp_path / "bad.yaml"
    bad.write_text("tile:\n  patch_size: 128\n")
    proc = run_cli("tile", str(svs), "--out", str(tmp_path / "x"), "--config", str(bad))
    assert proc.returncode != 0 and "unknown TileSpec key(s): patch_size" in proc.stderr


def test_demo_runs_the_whole_pipeline_on_the_sample_cohort(tmp_path):
    """The README's main job (with a shorter pretraining): heatmap PNGs and QuPath GeoJSON for every slide.
    Its output goes to a log file (stdout and stderr, as in a cluster job), which grows stage by stage
    while it runs: a line per stage and per slide, each flushed as it happens."""
    data, out, log = tmp_path / "cohort", tmp_path / "run", tmp_path / "demo.log"
    code, samples, seconds = watch_log(
        ["demo", "--data", str(data), "--out", str(out), "--pretrain-minutes", "0.1"], log
    )
    text = log.read_text()
    assert code == 0, text[-3000:]
    # the log grew while the run went on, not all at the end
    halfway = max((n for t, n in samples if t < seconds / 2), default=0)
    assert halfway >= 20 and len({n for _, n in samples}) >= 10, (halfway, samples[-5:], seconds)
    stages = [ln[9:].split(":")[0] for ln in text.splitlines() if ln[9:].endswith(" slides)")]
    assert stages == ["tile", "pretrain", "extract", "train", "predict", "heatmaps"], text[:3000]
    for stage in ("tile", "extract", "heatmaps"):
        assert sum(f" {stage} sample_" in ln for ln in text.splitlines()) == 16, text[:3000]
    assert sum(" train abmil seed " in ln for ln in text.splitlines()) == 9
    assert "it/s" not in text and "\x1b[" not in text  # no progress bar in a log
    slides = sorted(p.stem for p in data.glob("*.tiff"))
    assert len(slides) == 16 and len(list((out / "tiles").glob("*.zarr"))) == 16
    for sid in slides:
        assert (out / "heatmaps" / sid / f"{sid}.geojson").stat().st_size > 0
        assert (out / "heatmaps" / sid / f"{sid}.prob_tumour.png").stat().st_size > 0
    assert (out / "encoder" / "encoder.safetensors").exists() and (out / "models" / "abmil" / "run.json").exists()
    assert str(out.resolve() / "heatmaps") in text and "| auc |" in text
    assert (out / "cohort.yaml").exists()
