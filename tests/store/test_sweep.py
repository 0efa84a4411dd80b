"""Crash leftovers are swept safely: a dead or zombie writer's partial goes, a live writer's and another
host's (while its writer may be alive) stay; a rerun right after SIGKILL of a tiling run leaves none."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pathweak._atomic import (
    FOREIGN_STALE_SECONDS,
    Writer,
    parse_partial,
    partial_path,
    process_start,
    sweep_partials,
    writer_alive,
)

from .conftest import run_cli


def _named(folder: Path, host: str, pid: int, start: int) -> Path:
    p = folder / f".s.zarr.partial-{host}~{pid}-{start}-0123abcd"
    p.mkdir()
    (p / "zarr.json").write_text("{}")
    return p


def test_partial_names_carry_host_pid_and_start_time(tmp_path):
    p = partial_path(tmp_path / "heat.nii.gz", keep_suffix=True)
    assert p.name.startswith(".heat.partial-") and p.name.endswith(".nii.gz")
    w = parse_partial(p.name)
    assert w == Writer(socket.gethostname(), os.getpid(), process_start(os.getpid()))
    assert parse_partial(".s.zarr.partial-999999999-deadbeef") == Writer(socket.gethostname(), 999999999, 0)  # older name
    assert parse_partial("s.zarr") is None


def test_dead_and_zombie_writers_are_swept_live_ones_kept(tmp_path):
    host = socket.gethostname()
    live = _named(tmp_path, host, os.getpid(), process_start(os.getpid()))
    dead = _named(tmp_path, host, 999999999, 0)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(child.pid)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not reaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    zombie = _named(tmp_path, host, child.pid, start)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(child.pid, 0)  # a zombie still answers kill(pid, 0): the old sweep kept its partial
        assert not writer_alive(Writer(host, child.pid, start))
        running = _named(tmp_path, host, sleeper.pid, process_start(sleeper.pid))
        (tmp_path / "r").mkdir()  # the pid of a process that started after the writer: the writer is gone
        reused = _named(tmp_path / "r", host, sleeper.pid, process_start(sleeper.pid) - 1)
        removed = set(sweep_partials(tmp_path)) | set(sweep_partials(tmp_path / "r"))
        assert removed == {dead, zombie, reused}
        assert live.exists() and running.exists()
    finally:
        child.wait()
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_partial_is_kept_while_its_writer_may_be_alive(tmp_path):
    other = _named(tmp_path, "other-node.cluster", os.getpid(), 1)  # a pid that is alive here means nothing
    fresh = _named(tmp_path, "other-node.cluster", 999999999, 1)  # a pid that is dead here means nothing either
    assert sweep_partials(tmp_path) == [] and other.exists() and fresh.exists()
    old = time.time() - FOREIGN_STALE_SECONDS - 60  # untouched for longer than the rule's age: its writer is gone
    for p in (other / "zarr.json", other):
        os.utime(p, (old, old))
    assert sweep_partials(tmp_path) == [other]
    assert fresh.exists()


def test_rerun_right_after_sigkill_of_a_two_worker_tiling_leaves_no_partials(sample_cohort, tmp_path):
    """As a user would: SIGKILL the `pathweak tile --workers 2` process mid-run and rerun it at once. Its
    pool workers (children of a forkserver, so the kernel does not end them) notice and exit instead of
    hanging on as orphans that keep their partials "alive"; the rerun sweeps them, zombies included."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for i, src in enumerate(sorted(sample_cohort.glob("*.tiff")) * 2):  # 8 slides: the kill lands mid-run
        os.symlink(src, slides / f"s{i}.tiff")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pathweak_cli.main", "tile", str(slides), "--out", str(out), "--workers", "2",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tiles = out / "tiles"
    deadline = time.monotonic() + 240
    while not (tiles.is_dir() and sum(".partial-" in p.name for p in tiles.iterdir()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started two stores"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, as `kill -9 <pid>` does
    proc.wait()
    assert any(".partial-" in p.name for p in tiles.iterdir())
    try:
        rerun = run_cli("tile", str(slides), "--out", str(out), "--workers", "2", "--no-progress")
        assert rerun.returncode == 0, rerun.stderr
        assert not [p.name for p in tiles.iterdir() if ".partial-" in p.name]
        assert len(list(tiles.glob("*.zarr"))) == 8
        left = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(proc.pid)], capture_output=True, text=True, check=False).stdout
        assert not [ln for ln in left.splitlines() if "Z" not in ln.split()[1]], left  # no orphan worker hangs on
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_rerun_of_train_after_sigkill_sweeps_its_partial(mil_cohort, tmp_path):
    """As observed: `pathweak train` killed with SIGKILL left `.run.partial-*` beside its run folder and a
    successful rerun kept it (tile and extract sweep theirs). The rerun sweeps its own output's partials only."""
    out = tmp_path / "run"
    other = _named(tmp_path, socket.gethostname(), 999999999, 0)  # a dead writer's partial of another output
    args = ["train", str(mil_cohort["features"]), "--labels", str(mil_cohort["labels"]), "-o", str(out),
            "--bootstrap", "0", "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "pathweak_cli.main", *args, "--epochs", "500", "--min-epochs", "500"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not any(p.name.startswith(".run.partial-") for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never started its output"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert any(p.name.startswith(".run.partial-") for p in tmp_path.iterdir())
        rerun = run_cli(*args, "--epochs", "1", "--min-epochs", "1")
        assert rerun.returncode == 0, rerun.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "run"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("fails", [False, True])
def test_building_swaps_in_or_leaves_nothing(tmp_path, fails):
    from pathweak.store import building

    final = tmp_path / "out.txt"
    final.write_text("old")
    try:
        with building(final) as tmp:
            tmp.write_text("new")
            if fails:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert final.read_text() == ("old" if fails else "new")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_every_writer_sweeps_its_own_crash_leftovers(mil_cohort, tmp_path):
    """The same leftover in other places (docs/input_checks.md): prediction's results folder, the report,
    heatmap exports and h5 exports each sweep a dead writer's partials of their own outputs."""
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.heatmap.export import write_heatmaps
    from pathweak.report import write_report
    from pathweak.train import TrainConfig, predict_slides, train_cohort

    host = socket.gethostname()
    run = train_cohort([mil_cohort["features"]], mil_cohort["labels"], tmp_path / "run",
                       TrainConfig(head="mean", seeds=(0,), max_epochs=1, min_epochs=1, bootstrap=0, device="cpu"),
                       progress=False)
    results = tmp_path / "pred" / "results" / "mean"
    results.mkdir(parents=True)
    leftovers = [_named(results, host, 999999999, 0)]
    store = mil_cohort["features"] / "test_000.zarr"
    (pred,) = predict_slides(run.out_dir, [store], tmp_path / "pred", name="mean", progress=False)
    leftovers.append(run.out_dir / f".report_files.partial-{host}~999999999-0-0123abcd")
    leftovers[-1].mkdir()
    write_report(run.out_dir, slides=1, tiles=2, bootstrap=10)
    heat = tmp_path / "heat"
    heat.mkdir()
    leftovers.append((heat / f".test_000.geojson.partial-{host}~999999999-0-0123abcd").resolve())
    leftovers[-1].write_text("{")
    write_heatmaps(pred.results, heat, ["geojson"])
    enc = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=64)  # mil_cohort's
    h5 = tmp_path / "h5_files" / enc.encoder_id
    h5.mkdir(parents=True, exist_ok=True)
    leftovers.append(h5 / f".test_000.partial-{host}~999999999-0-0123abcd.h5")
    leftovers[-1].write_bytes(b"\x89HDF")
    extract_features([mil_cohort["root"] / "tiles" / "test_000.zarr"], enc, tmp_path, num_workers=0, progress=False,
                     export_h5_files=True)
    assert [p for p in leftovers if p.exists()] == []
