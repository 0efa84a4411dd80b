"""How long do light commands take as whole processes, and which heavy libraries do they load? Prints
JSON and writes benchmarks/results/startup.json.

    python benchmarks/startup.py [--runs 5] [--slide path/to/slide.svs] [--out benchmarks/results/startup.json]

Each command runs ``--runs`` times after one warm-up, as a fresh interpreter (``python -m
pathweak_cli.main ...``, what the ``pathweak`` console script runs); the wall time of each run is
taken around the process, and the median (with min and max) reported. The baseline in the same run is
the interpreter alone (``python -c pass``) and importing torch alone, so a command's figure reads
against what Python and torch cost on this machine at this moment.

Commands: ``--help``, ``tile --help``, ``--version``, ``info`` on a slide (``--slide``, else the CMU-1-Small-Region SVS
of ../shared/data, else a generated sample slide), ``encoders list``, ``encoders info uni`` and
``extract --encoder uni`` on a small TileStore without the UNI weights (the fast "weights missing"
error). A second, untimed run of each records the heavy modules it loaded (torch, lightning, timm,
monai, zarr, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEAVY = ("torch", "lightning", "timm", "monai", "zarr", "transformers")


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median, min and max wall seconds of ``runs`` runs of ``cmd`` after one warm-up."""
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO, check=False)
        if i:
            times.append(time.perf_counter() - t0)
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
    }


def loaded(args: list[str], env: dict[str, str]) -> list[str]:
    """The heavy modules the command ``pathweak ARGS`` has imported when it ends (its exit status ignored)."""
    code = (
        "import sys, runpy, json\n"
        f"sys.argv = ['pathweak', *{args!r}]\n"
        "try:\n    runpy.run_module('pathweak_cli.main', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    try:
        return list(json.loads(proc.stderr.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return ["(could not tell: " + proc.stderr.strip()[-200:] + ")"]


def inputs(work: Path, slide: str | None) -> tuple[Path, Path]:
    """A slide for ``info`` and a small TileStore for ``extract``."""
    from pathweak.synthetic import make_sample_cohort
    from pathweak.tiling import tile_slides

    shared = REPO.parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
    first = make_sample_cohort(work / "cohort", n_slides=1)[0].path
    chosen = Path(slide) if slide else (shared if shared.exists() else first)
    (tiled,) = tile_slides([first], work / "run", progress=False)
    return chosen, Path(str(tiled.store))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slide", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "startup.json"))
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="pathweak-empty-hub-")  # no UNI weights, whatever is cached
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    py = [sys.executable]
    with tempfile.TemporaryDirectory(prefix="pathweak-startup-") as tmp:
        slide, store = inputs(Path(tmp), args.slide)
        commands = {
            "--help": ["--help"],
            "tile --help": ["tile", "--help"],
            "--version": ["--version"],
            "info": ["info", str(slide), "--json"],
            "encoders list": ["encoders", "list"],
            "encoders info uni": ["encoders", "info", "uni"],
            "extract --encoder uni (no weights)": ["extract", str(store), "--encoder", "uni", "-o", f"{tmp}/x"],
        }
        results = {
            "baseline: python -c pass": timed([*py, "-c", "pass"], args.runs, env),
            "baseline: python -c 'import torch'": timed([*py, "-c", "import torch"], args.runs, env),
        }
        for name, cmd in commands.items():
            results[name] = {**timed([*py, "-m", "pathweak_cli.main", *cmd], args.runs, env), "loads": loaded(cmd, env)}
    out = {
        "benchmark": "startup",
        "what": "whole-process wall seconds of light commands (median of --runs after a warm-up) and the heavy "
        "modules each loads",
        "command": "python benchmarks/startup.py",
        "runs": args.runs,
        "machine": machine(),
        "results": results,
    }
    emit(out, args.out)


if __name__ == "__main__":
    main()
