"""The one GPU check (issue 15): every GPU figure pathweak reports, in one run of about 7 minutes on one GPU,
written to one JSON file. Each step runs in its own process with its own time limit; a failing step is
recorded and the others still run.

    python benchmarks/gpu_check.py                    # on a CUDA machine: benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --dry-run --out X  # every step tiny, on the CPU (what CI-less checking can do)
    python benchmarks/gpu_check.py --plan             # print the steps and their commands, run nothing

Steps:
1. ``pytest -m gpu``: every gpu-marked test, collected by its marker (``pytest -m gpu --collect-only`` over the
   test files that use it, at any depth of tests/; ``--plan`` lists them); counts of passed / failed /
   skipped (a skip is not a pass) against the number planned;
2. ``benchmarks/extract.py --device cuda`` with a ViT-L/16 (UNI-sized, random weights), CPU decode and
   device decode timed in the same run against the model's pure bf16 forward;
3. ``benchmarks/mil_speed.py --device cuda``: a MIL epoch from the device-resident bank against the h5
   DataLoader epoch;
4. 3 minutes of DINO pretraining of a ViT-S/16 (224 px) on the GPU: steps/s and RankMe.

Acceptance (``acceptance`` in the JSON): device decode >= 0.9x the pure forward, faster than CPU decode,
the bank's MIL epoch >= 10x the h5 epoch, every gpu test passed (none skipped).

Machines without pathweak's dependencies (the lent GPU machine has torch, timm, lightning, h5py, cv2, but
not zarr, simplejpeg, ...): ``--wheels DIR`` installs the wheels in DIR first (no index), and
``--data DIR`` points the tests and benchmarks at a copy of ``shared/data`` (``PATHWEAK_SHARED_DATA``);
``benchmarks/gpu_carry.sh`` prepares both in ``.gpu_carry/`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable


def plan(dry: bool, minutes: float, env: dict | None = None) -> list[dict]:
    """The steps: name, command, time limit (s); the pytest step also lists the gpu tests it will run."""
    gpu = gpu_tests(env)
    pytest_gpu = {"name": "pytest_gpu", "timeout": 300 if dry else 180, "tests": gpu["tests"],
                  "collection_errors": gpu["errors"],
                  "cmd": [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *gpu["files"]]}
    if dry:
        return [
            pytest_gpu,
            {"name": "extract", "timeout": 400,
             "cmd": [PY, "benchmarks/extract.py", "--device", "cpu", "--encoder", "timm:vit_tiny_patch16_224",
                     "--tiles", "32", "--repeats", "1", "--workers", "0", "--decode", "cpu", "auto"]},
            {"name": "mil_speed", "timeout": 300,
             "cmd": [PY, "benchmarks/mil_speed.py", "--device", "cpu", "--slides", "6", "--tiles", "40", "--dim", "32",
                     "--heads", "mean", "--epochs", "1", "--repeats", "1", "--work", "benchmarks/_work/gpu_check_mil"]},
            {"name": "pretrain", "timeout": 400,
             "cmd": [PY, __file__, "_pretrain", "--tiny", "--minutes", "0.2"]},
        ]
    return [
        pytest_gpu,
        {"name": "extract", "timeout": 105,
         "cmd": [PY, "benchmarks/extract.py", "--device", "cuda", "--encoder", "timm:vit_large_patch16_224",
                 "--weights", "random", "--tiles", "4096", "--repeats", "3", "--workers", "8", "--decode", "cpu", "gpu"]},
        {"name": "mil_speed", "timeout": 90,
         "cmd": [PY, "benchmarks/mil_speed.py", "--device", "cuda", "--heads", "mean", "abmil", "transmil",
                 "--epochs", "2", "--repeats", "2"]},
        {"name": "pretrain", "timeout": int(minutes * 60) + 45,
         "cmd": [PY, __file__, "_pretrain", "--minutes", str(minutes)]},
    ]


def gpu_test_files() -> list[str]:
    """The test files that use the gpu marker, at any depth of tests/ (collecting only those: the GPU image
    may lack libraries that other test modules import, such as nibabel or SimpleITK)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text(errors="replace"))


def gpu_tests(env: dict | None = None) -> dict:
    """The gpu-marked tests as pytest collects them by marker (``-m gpu --collect-only``) from
    :func:`gpu_test_files`: files, test ids, and files that fail to collect (a missing library)."""
    files = gpu_test_files()
    proc = subprocess.run([PY, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                          cwd=REPO, env=env or step_env(None), capture_output=True, text=True, check=False)
    tests = [line.strip() for line in proc.stdout.splitlines() if "::" in line and not line.startswith("ERROR")]
    errors = sorted(set(re.findall(r"^ERROR (\S+)", proc.stdout, re.M)))
    return {"files": files, "tests": tests, "errors": errors}


def step_env(data: Path | None) -> dict:
    """The steps' environment: this checkout first on the path, unbuffered output, the data copy (``--data``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONUNBUFFERED": "1"}
    if data:
        env["PATHWEAK_SHARED_DATA"] = str(data.resolve())
    return env


def run_step(step: dict, env: dict) -> dict:
    """Run one step; its JSON (the last JSON object it printed), or the tail of its output on failure."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(step["cmd"], cwd=REPO, env=env, capture_output=True, text=True, timeout=step["timeout"],
                              check=False)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = "timeout", _text(exc.stdout), _text(exc.stderr)
    rec = {"command": " ".join(str(c) for c in step["cmd"]), "rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
    if step["name"] == "pytest_gpu":
        rec.update(pytest_counts(out + err), planned=len(step.get("tests", [])),
                   collection_errors=step.get("collection_errors", []))
    else:
        result = last_json(out)
        if result is not None:
            rec["result"] = result
    if rc != 0 or (step["name"] != "pytest_gpu" and "result" not in rec):
        rec["output_tail"] = (out + err)[-3000:]
    return rec


def pytest_counts(text: str) -> dict:
    """passed / failed / skipped / errors / deselected from pytest's summary line."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "deselected")}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text):
        counts["error" if word.startswith("error") else word] = int(n)
    skips = re.findall(r"SKIPPED \[(\d+)\] [^:]+:\d+: (.*)", text)
    counts["skip_reasons"] = sorted({reason for _, reason in skips})[:10]
    # tests of several GPUs skip on a one-GPU machine: reported, not held against "every gpu test passes"
    counts["skipped_needs_two_gpus"] = sum(int(n) for n, reason in skips if "two CUDA devices" in reason)
    return counts


def last_json(text: str) -> dict | None:
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except ValueError:
        return None


def acceptance(steps: dict) -> dict:
    """The issue's GPU acceptance items, from the steps' results (None: not measured)."""
    ext = (steps.get("extract") or {}).get("result") or {}
    by = ext.get("by_decode", {})
    mil = (steps.get("mil_speed") or {}).get("result") or {}
    py = steps.get("pytest_gpu") or {}
    gpu_ratio = by.get("gpu", {}).get("ratio")
    speedups = [h.get("speedup_bank_vs_h5") for h in (mil.get("heads") or {}).values() if isinstance(h, dict)]
    speedups = [s for s in speedups if s is not None]
    return {
        "device_decode_vs_forward": gpu_ratio,
        "device_decode_ge_0.9x_forward": None if gpu_ratio is None else gpu_ratio >= 0.9,
        "gpu_over_cpu_decode": ext.get("gpu_over_cpu_decode"),
        "device_decode_faster_than_cpu_decode": None if "gpu_over_cpu_decode" not in ext else ext["gpu_over_cpu_decode"] > 1,
        "mil_bank_over_h5_epoch": min(speedups) if speedups else None,
        "mil_bank_ge_10x_h5": None if not speedups else min(speedups) >= 10,
        "gpu_tests_all_passed": None if "passed" not in py else (py["rc"] == 0 and py["failed"] == 0 and py["error"] == 0
                                                                 and py["skipped"] == py.get("skipped_needs_two_gpus", 0)
                                                                 and py["passed"] > 0 and not py.get("collection_errors")
                                                                 and py["passed"] + py["skipped"] == py.get("planned", py["passed"] + py["skipped"])),
        "gpu_tests_needing_two_gpus_skipped": py.get("skipped_needs_two_gpus"),
    }


def pretrain_step(minutes: float, tiny: bool) -> None:
    """DINO pretraining of a ViT-S/16 for ``minutes`` on the TileStore extract.py built (or the sample cohort's):
    prints steps, steps/s and RankMe as JSON."""
    import tempfile

    import torch

    sys.path.insert(0, str(HERE))
    from extract import tile_store  # the same real tiles as the extraction benchmark

    from pathweak.devices import precision
    from pathweak.ssl import SSLConfig, pretrain

    store = tile_store(128 if tiny else 4096)
    cuda = torch.cuda.is_available()
    if tiny:
        cfg = SSLConfig.tiny("dino", depth=2, img_size=64, local_size=32, batch_size=8, rankme_samples=16,
                             num_workers=0, max_epochs=1000, samples_per_epoch=32, warmup_steps=2, max_minutes=minutes)
    else:
        cfg = SSLConfig(method="dino", arch="vit_small", img_size=224, batch_size=128, num_workers=12, max_epochs=1000,
                        samples_per_epoch=128 * 100, rankme_samples=512, max_minutes=minutes, devices=1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = pretrain([store], Path(tmp) / "ssl", cfg, resume=False, progress=False)
        seconds = time.perf_counter() - t0
    print(json.dumps({
        "arch": cfg.arch, "depth": cfg.depth, "img_size": cfg.img_size, "batch_size": cfg.batch_size,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "precision": precision(cfg.precision, "cuda" if cuda else "cpu"),
        "minutes_budget": minutes, "seconds": round(seconds, 1), "steps": res.steps, "epochs": res.epochs,
        "steps_per_s": round(res.steps / res.seconds, 3), "images_per_s": round(res.steps * cfg.batch_size / res.seconds, 1),
        "rankme": res.rankme, "final_loss": res.losses[-1] if res.losses else None,
    }, indent=2))


def machine() -> dict:
    info = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    gpus=torch.cuda.device_count(), cpus=os.cpu_count())
    except ImportError as exc:
        info["torch"] = f"missing: {exc}"
    return info


def install_wheels(folder: Path) -> dict:
    """Install the packages whose wheels are in ``folder`` (gpu_carry.sh: possibly for several Python
    versions): pip picks, for each, the wheel this interpreter takes; none of this Python's is an error."""
    names = sorted({p.name.split("-")[0] for p in folder.glob("*.whl")})
    if not names:
        return {"wheels": 0}
    proc = subprocess.run([PY, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--find-links", str(folder),
                           *names], capture_output=True, text=True, check=False)
    return {"packages": names, "rc": proc.returncode, "output_tail": (proc.stdout + proc.stderr)[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    ap.add_argument("--dry-run", action="store_true", help="every step tiny, on the CPU")
    ap.add_argument("--plan", action="store_true", help="print the steps as JSON and exit")
    ap.add_argument("--only", nargs="+", help="run only these steps")
    ap.add_argument("--minutes", type=float, default=3.0, help="pretraining budget")
    ap.add_argument("--wheels", type=Path, help="install these wheels first (machines without the dependencies)")
    ap.add_argument("--data", type=Path, help="a copy of shared/data (sets PATHWEAK_SHARED_DATA)")
    args = ap.parse_args()

    env = step_env(args.data)
    if args.plan:
        steps = [s for s in plan(args.dry_run, args.minutes, env) if not args.only or s["name"] in args.only]
        print(json.dumps([{**s, "cmd": " ".join(map(str, s["cmd"]))} for s in steps], indent=2))
        return
    report: dict = {"check": "gpu_check", "dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.wheels:
        report["install"] = install_wheels(args.wheels)
    report["machine"] = machine()
    if not args.dry_run and not report["machine"].get("cuda"):
        sys.exit("gpu_check: no CUDA device here; run with --dry-run to check the script on a CPU")
    steps = [s for s in plan(args.dry_run, args.minutes, env) if not args.only or s["name"] in args.only]
    report["steps"] = {}
    t0 = time.perf_counter()
    for step in steps:
        print(f"gpu_check: {step['name']} (limit {step['timeout']} s)", file=sys.stderr, flush=True)
        report["steps"][step["name"]] = run_step(step, env)
        print(f"gpu_check: {step['name']} rc={report['steps'][step['name']]['rc']} "
              f"in {report['steps'][step['name']]['seconds']} s", file=sys.stderr, flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["acceptance"] = acceptance(report["steps"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, args.out)
    if os.environ.get("OUT"):  # the device machine's folder of files that come back
        shutil.copy(args.out, Path(os.environ["OUT"]) / args.out.name)
    print(json.dumps(report["acceptance"], indent=2))


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_pretrain":
        sub = argparse.ArgumentParser()
        sub.add_argument("_pretrain")
        sub.add_argument("--minutes", type=float, default=3.0)
        sub.add_argument("--tiny", action="store_true")
        a = sub.parse_args()
        pretrain_step(a.minutes, a.tiny)
    else:
        main()
