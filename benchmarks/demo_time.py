"""The README's main command as a new user runs it: ``pathweak demo`` from nothing (the sample cohort
generated, every stage run), then again (every stage skipped), each timed as a whole process, with its
output going to a log file whose growth is recorded. Prints JSON and writes
benchmarks/results/demo_time.json.

    python benchmarks/demo_time.py [--cpus 0,1] [--keep DIR] [--out benchmarks/results/demo_time.json]
    python benchmarks/demo_time.py --compare DIR --out benchmarks/results/demo_before_after.json

``--compare DIR`` also runs the demo (fresh, then rerun) with the code checked out at DIR (the code before a
change), after this checkout's, and compares the two: the generated slides and the TileStores byte for byte
(``same_slides``, ``same_tiles``); the encoder is pretrained for a time budget, so the features and the
scores after it can differ from run to run and are reported side by side (``metrics``), not compared.

Targets (issue 27): on 2 idle cores the fresh run under 4 minutes and the rerun under 30 s, and a log
that grows stage by stage. ``--cpus`` pins the runs to those CPUs (default: the CPUs this process may
use); the 1-minute load average before and after each run is recorded, so an idle machine can be told
from a busy one. The log is the command's stdout and stderr (as in a cluster job), without
PYTHONUNBUFFERED, sampled every 0.2 s: when each stage's first line appeared, and how many lines were
there by half the run's time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGE = re.compile(r"^\d\d:\d\d:\d\d (\w+): starting")


def run_logged(
    cmd: list[str], log: Path, cpus: set[int] | None, env: dict[str, str], cwd: Path = REPO
) -> dict[str, object]:
    """Run ``cmd`` with stdout and stderr to ``log``; returns its wall seconds, exit status, the load
    average around it, and when each line of the log first appeared (seconds since the start)."""
    seen: list[tuple[float, str]] = []
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        while True:
            done = proc.poll() is not None
            lines = log.read_text(errors="replace").splitlines()
            now = time.monotonic() - started
            seen += [(now, ln) for ln in lines[len(seen) :]]
            if done:
                break
            time.sleep(0.2)
    seconds = time.monotonic() - started
    stages = {}
    for t, line in seen:
        m = STAGE.match(line)
        if m:
            stages.setdefault(m.group(1), round(t, 1))
    return {
        "seconds": round(seconds, 1),
        "exit_status": proc.returncode,
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "log_lines": len(seen),
        "lines_by_half_time": sum(t < seconds / 2 for t, _ in seen),
        "stage_started_at_s": stages,
        "log": str(log),
    }


def demo_runs(code: Path, work: Path, cpus: set[int] | None) -> tuple[dict, dict]:
    """The demo from nothing, then rerun, with the pathweak checked out at ``code``, in ``work``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH", "")]))
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pathweak_cli.main", "demo", "--data", str(work / "cohort"), "--out", str(work / "run")]
    fresh = run_logged(cmd, work / "demo.log", cpus, env, cwd=code)
    return fresh, run_logged(cmd, work / "rerun.log", cpus, env, cwd=code)


def compare_outputs(after: Path, before: Path) -> dict:
    """The two demo runs' slides and TileStores compared byte for byte; their cross-validated metrics."""
    import hashlib

    from _outputs import same_stores

    def digest(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tif*"))}

    def metrics(run: Path) -> dict:
        found = sorted((run / "models").glob("*/run.json"))
        return {p.parent.name: json.loads(p.read_text())["metrics"] for p in found}

    slides_after, slides_before = digest(after / "cohort"), digest(before / "cohort")
    return {
        "same_slides": bool(slides_after) and slides_after == slides_before,
        "slides": len(slides_after),
        "same_tiles": same_stores(after / "run" / "tiles", before / "run" / "tiles"),
        "metrics": {"after": metrics(after / "run"), "before": metrics(before / "run")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cpus", default=None, help="CPUs to pin the runs to, e.g. 0,1 (default: all this process may use)"
    )
    ap.add_argument("--keep", default=None, help="Folder for the cohort, run and logs (default: a temporary one)")
    ap.add_argument("--out", default=str(HERE / "results" / "demo_time.json"))
    ap.add_argument("--compare", default=None, help="Also run the code checked out at this folder and compare")
    args = ap.parse_args()
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
    work = Path(args.keep or tempfile.mkdtemp(prefix="pathweak-demo-time-"))
    fresh, rerun = demo_runs(REPO, work, cpus)
    timings = work / "run" / "state" / "timings.json"  # each stage's seconds in the run that did it
    out = {
        "benchmark": "demo_time",
        "what": "pathweak demo from nothing, then rerun, as whole processes; the log written to a file",
        "command": "python benchmarks/demo_time.py" + (f" --cpus {args.cpus}" if args.cpus else ""),
        "machine": machine(pinned=sorted(cpus) if cpus else None, note="idle only when the load averages are near 0"),
        "fresh": fresh,
        "rerun": rerun,
        "targets": {
            "fresh_under_240_s": fresh["seconds"] < 240,
            "rerun_under_30_s": rerun["seconds"] < 30,
            "log_grew_stage_by_stage": len(fresh["stage_started_at_s"]) >= 6 and fresh["lines_by_half_time"] >= 10,
        },
        "stage_seconds_of_the_fresh_run": json.loads(timings.read_text()) if timings.exists() else {},
    }
    if args.compare:
        before = work / "before"
        out["before"] = dict(zip(("fresh", "rerun"), demo_runs(Path(args.compare).resolve(), before, cpus), strict=True))
        out["before"]["code"] = args.compare
        out["compare"] = compare_outputs(work, before)
    emit(out, args.out)


if __name__ == "__main__":
    main()
