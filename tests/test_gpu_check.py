"""benchmarks/gpu_check.py, the one GPU check: its plan is the issue's, its verdicts follow the numbers, it
refuses to pretend on a CPU, and (slow) its dry run executes every step tiny on the CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gpu_marked_tests() -> set[str]:
    """Every gpu-marked test of the suite, as pytest collects them by marker over all of tests/."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests"], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def test_the_plan_lists_every_gpu_marked_test():
    """`gpu_check.py --plan` runs every gpu-marked test, at any depth of tests/ (it once collected only the
    top-level test files and missed the nvJPEG test among five files), and collects them without error."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--plan"], cwd=REPO, capture_output=True, text=True, check=True)
    plan = {s["name"]: s for s in json.loads(proc.stdout)}
    step = plan["pytest_gpu"]
    assert set(step["tests"]) == gpu_marked_tests() and len(step["tests"]) >= 7 and not step["collection_errors"]
    assert "tests/features/test_decode.py::test_device_decode_agrees_with_cpu_decode" in step["tests"]
    for test_file in {t.split("::")[0] for t in step["tests"]}:
        assert test_file in step["cmd"].split()
    assert "tests/volumes/test_volume_io.py" not in step["cmd"]  # only files with gpu tests are collected
    steps = {name: s["cmd"] for name, s in plan.items()}
    assert list(steps) == ["pytest_gpu", "extract", "mil_speed", "pretrain"]
    assert "-m gpu" in steps["pytest_gpu"]
    assert "--device cuda" in steps["extract"] and "vit_large_patch16_224" in steps["extract"]
    assert "--decode cpu gpu" in steps["extract"] and "--weights random" in steps["extract"]
    assert "benchmarks/mil_speed.py --device cuda" in steps["mil_speed"]
    assert "_pretrain --minutes 3.0" in steps["pretrain"]
    assert sum(s["timeout"] for s in plan.values()) <= 10 * 60  # fits one device command


def test_acceptance_follows_the_numbers():
    mod = load()
    steps = {"extract": {"result": {"by_decode": {"cpu": {"ratio": 0.4}, "gpu": {"ratio": 0.95}}, "gpu_over_cpu_decode": 2.4}},
             "mil_speed": {"result": {"heads": {"mean": {"speedup_bank_vs_h5": 30.0}, "abmil": {"speedup_bank_vs_h5": 12.0}}}},
             "pytest_gpu": {"rc": 0, "passed": 7, "failed": 0, "skipped": 0, "error": 0, "planned": 7}}
    ok = mod.acceptance(steps)
    assert ok["device_decode_ge_0.9x_forward"] and ok["device_decode_faster_than_cpu_decode"]
    assert ok["mil_bank_over_h5_epoch"] == 12.0 and ok["mil_bank_ge_10x_h5"] and ok["gpu_tests_all_passed"]
    steps["pytest_gpu"]["skipped"] = 1  # a skipped gpu test is not a pass
    steps["extract"]["result"]["by_decode"]["gpu"]["ratio"] = 0.8
    bad = mod.acceptance(steps)
    assert bad["gpu_tests_all_passed"] is False and bad["device_decode_ge_0.9x_forward"] is False
    steps["pytest_gpu"].update(passed=5, skipped=2, skipped_needs_two_gpus=2)  # one GPU: those two may skip
    assert mod.acceptance(steps)["gpu_tests_all_passed"] is True
    steps["pytest_gpu"].update(planned=9)  # fewer ran than were planned (a file that did not collect)
    assert mod.acceptance(steps)["gpu_tests_all_passed"] is False
    assert all(v is None for v in mod.acceptance({}).values())  # nothing measured: no verdict


def test_pytest_counts_and_json_parsing():
    mod = load()
    text = ("SKIPPED [1] tests/test_x.py:3: no CUDA device\nSKIPPED [2] tests/test_y.py:9: needs two CUDA devices\n"
            "2 passed, 3 skipped, 3 deselected in 4.0s\n")
    c = mod.pytest_counts(text)
    assert (c["passed"], c["skipped"], c["deselected"], c["failed"]) == (2, 3, 3, 0)
    assert c["skip_reasons"] == ["needs two CUDA devices", "no CUDA device"] and c["skipped_needs_two_gpus"] == 2
    assert mod.last_json('mean {"a": 1}\n{\n  "x": {"y": 2}\n}\n') == {"x": {"y": 2}}


def test_without_cuda_it_refuses_unless_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json"), "--only", "mil_speed"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_dry_run_executes_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True, timeout=1800)
    report = json.loads(out.read_text())
    assert report["dry_run"] and set(report["steps"]) == {"pytest_gpu", "extract", "mil_speed", "pretrain"}
    for name, step in report["steps"].items():
        assert step["rc"] == 0, (name, step.get("output_tail"))
    assert report["steps"]["extract"]["result"]["by_decode"]["cpu"]["extract_tiles_per_s"] > 0
    assert report["steps"]["mil_speed"]["result"]["heads"]["mean"]["speedup_bank_vs_h5"] > 0
    assert report["steps"]["pretrain"]["result"]["steps"] > 0 and report["steps"]["pretrain"]["result"]["rankme"]


def test_gpu_carry_needs_no_virtualenv_and_takes_several_pythons(tmp_path):
    """benchmarks/gpu_carry.sh calls python3 (a bare `python` exists only in a virtual environment) or
    $PYTHON, and downloads wheels for every Python version it is given (it fetched cp312 wheels only)."""
    import shutil

    from conftest import LC25000, need_shared

    need_shared(LC25000)
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "gpu_carry.sh", tmp_path / "benchmarks")
    shared = tmp_path / "shared"
    (shared / "labeled" / "lc25000_lung").mkdir(parents=True)
    rows = (LC25000 / "groups.csv").read_text().splitlines()[:4]
    (shared / "labeled" / "lc25000_lung" / "groups.csv").write_text("\n".join(rows) + "\n")
    for row in rows[1:]:
        name = row.split(",")[0]
        (shared / "labeled" / "lc25000_lung" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(LC25000 / name, shared / "labeled" / "lc25000_lung" / name)
    log = tmp_path / "calls.txt"
    stub = tmp_path / "py"  # records pip downloads (no network in a test) and runs the script's Python parts
    stub.write_text(f'#!/bin/sh\nif [ "$2" = pip ]; then echo "$@" >> {log}; exit 0; fi\nexec {sys.executable} "$@"\n')
    stub.chmod(0o755)
    proc = subprocess.run(["bash", str(tmp_path / "benchmarks" / "gpu_carry.sh"), str(shared), "3.11", "3.12"],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub)}, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "--python-version 3.11" in calls[0] and "--python-version 3.12" in calls[1]
    assert len(list((tmp_path / ".gpu_carry" / "data" / "labeled" / "lc25000_lung").rglob("*.jpeg"))) == 3
    script = (REPO / "benchmarks" / "gpu_carry.sh").read_text()
    assert not [line for line in script.splitlines() if line.lstrip().startswith("python ")]


def test_the_extraction_benchmark_times_as_many_tiles_as_asked(tmp_path):
    """With fewer images than --tiles (the GPU machine's copy holds ~1.5k), the benchmark cycles through them
    instead of silently timing fewer tiles."""
    import importlib.util
    import shutil

    from conftest import LC25000, need_shared

    need_shared(LC25000)
    spec = importlib.util.spec_from_file_location("bench_extract", REPO / "benchmarks" / "extract.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = tmp_path / "few"
    folder.mkdir()
    for f in sorted(LC25000.rglob("*.jpeg"))[:4]:
        shutil.copy(f, folder / f.name)
    files = bench.tile_files(10, folder)
    assert len(files) == 10 and len(set(files)) == 4
    assert len(bench.tile_files(3, folder)) == 3
