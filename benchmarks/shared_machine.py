"""``pathweak train`` on an idle and on a loaded machine: does it slow by no more than its fair share of the
CPUs, and does anything spin? Prints JSON and writes benchmarks/results/shared_machine.json.

    python benchmarks/shared_machine.py [--demo runs/demo] [--busy 3] [--repeats 3] [--cpus 0,1] [--quick]

The command is the demo's train stage as a whole process (``pathweak train`` on the demo's features and
labels: ABMIL, 3 folds x 3 seeds, the demo's epochs and patience; ``--demo`` is a finished demo run,
made first with ``pathweak demo`` when the folder has none). Each case runs ``--repeats`` times, idle and
with ``--busy`` busy loops (one Python process each, ``while True: pass``) on the same CPUs, alternating;
medians reported, with each run's CPU seconds (user + sys of the process and its children).

Cases: ``default`` (pathweak's choice: one torch thread for the demo's small bags, pathweak/cpus.py) and
``all_cpus`` (OMP_NUM_THREADS = the CPUs, what torch did by itself before).

Fair share: ``L`` busy loops and ``T`` compute threads on ``C`` CPUs give each runnable thread C / (L + T)
of a CPU; a single-threaded run (imports, Python) gets min(1, C / (L + 1)). The fair slowdown reported is
(L + 1) / C for the default case (one thread), capped below at 1; ``within_fair_share`` compares the
measured loaded/idle ratio with it (10 % allowance). CPU seconds loaded vs idle tell spinning: a process
that spins while it waits burns more CPU the longer it waits.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the demo's train stage (ABMIL, 3 folds x 3 seeds, its epochs, patience and bootstrap); --quick: 1 seed, 10 epochs
TRAIN = "--head abmil --folds 3 --seed 0 --seed 1 --seed 2 --lr 1e-3 --epochs 60 --min-epochs 10 --patience 15"
QUICK = "--head abmil --folds 3 --seed 0 --lr 1e-3 --epochs 10 --min-epochs 5 --patience 5"


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_train(demo: Path, out: Path, env: dict[str, str], cpus: set[int] | None, options: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``pathweak train`` process."""
    features = next((demo / "features").iterdir())
    cmd = [
        sys.executable,
        "-m",
        "pathweak_cli.main",
        "train",
        str(features),
        "--labels",
        str(demo / "labels.csv"),
        "-o",
        str(out),
        *options.split(),
        "--bootstrap",
        "200",
        "--no-progress",
    ]
    cpu0, t0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    wall, cpu = time.perf_counter() - t0, child_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"pathweak train failed:\n{proc.stderr[-3000:]}")
    return wall, cpu


def busy_loops(n: int, cpus: set[int] | None) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        for _ in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default=str(REPO / "runs" / "demo"))
    ap.add_argument("--busy", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 seed and 10 epochs instead of the demo's 3 x 60 (a check)")
    ap.add_argument(
        "--cpus", default=None, help="CPUs for the runs and the busy loops (default: all this process may use)"
    )
    ap.add_argument("--out", default=str(HERE / "results" / "shared_machine.json"))
    args = ap.parse_args()
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
    n_cpus = len(cpus) if cpus else len(os.sched_getaffinity(0))
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "OMP_NUM_THREADS")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH", "")]))
    demo = Path(args.demo)
    if not (demo / "labels.csv").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pathweak_cli.main",
                "demo",
                "--out",
                str(demo),
                "--data",
                str(demo.parent / "demo_cohort"),
                "--no-progress",
            ],
            check=True,
            cwd=REPO,
            env=base,
            stdout=subprocess.DEVNULL,
        )
    options = QUICK if args.quick else TRAIN
    cases = {"default": base, "all_cpus": {**base, "OMP_NUM_THREADS": str(n_cpus)}}
    times: dict[str, dict[str, list[tuple[float, float]]]] = {c: {"idle": [], "loaded": []} for c in cases}
    with tempfile.TemporaryDirectory(prefix="pathweak-shared-") as tmp:
        for r in range(args.repeats):
            for case, env in cases.items():
                times[case]["idle"].append(run_train(demo, Path(tmp) / f"{case}-idle-{r}", env, cpus, options))
                loops = busy_loops(args.busy, cpus)
                try:
                    time.sleep(1.0)
                    times[case]["loaded"].append(run_train(demo, Path(tmp) / f"{case}-loaded-{r}", env, cpus, options))
                finally:
                    for p in loops:
                        p.kill()
                        p.wait()
    fair = max(1.0, (args.busy + 1) / n_cpus)
    results = {}
    for case, runs in times.items():
        idle = statistics.median(w for w, _ in runs["idle"])
        loaded = statistics.median(w for w, _ in runs["loaded"])
        results[case] = {
            "idle_s": round(idle, 1),
            "loaded_s": round(loaded, 1),
            "slowdown": round(loaded / idle, 2),
            "cpu_idle_s": round(statistics.median(c for _, c in runs["idle"]), 1),
            "cpu_loaded_s": round(statistics.median(c for _, c in runs["loaded"]), 1),
            "runs": {k: [[round(w, 1), round(c, 1)] for w, c in v] for k, v in runs.items()},
        }
    default = results["default"]
    out = {
        "benchmark": "shared_machine",
        "what": "pathweak train (the demo's train stage) as a whole process, idle and with busy loops on the same CPUs",
        "command": f"python benchmarks/shared_machine.py --busy {args.busy} --repeats {args.repeats}"
        + (" --quick" if args.quick else "")
        + (f" --cpus {args.cpus}" if args.cpus else ""),
        "machine": machine(
            pinned=sorted(cpus) if cpus else None,
            busy_loops=args.busy,
            note="the idle figures are idle only when nothing else runs on these CPUs",
        ),
        "train_options": options,
        "fair_slowdown": round(fair, 2),
        "results": results,
        "within_fair_share": default["slowdown"] <= 1.1 * fair,
        "spins": default["cpu_loaded_s"] > 1.25 * default["cpu_idle_s"],
        "why_not": None
        if default["slowdown"] <= 1.1 * fair
        else "the loaded run took longer than its fair share: see cpu_loaded_s against cpu_idle_s (more CPU "
        "when loaded means waiting by spinning) and whether the idle figure was taken on an idle machine",
    }
    emit(out, args.out)


if __name__ == "__main__":
    main()
