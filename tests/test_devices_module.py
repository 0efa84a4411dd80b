"""pathweak/devices.py, the one place device choices are made: no other module counts GPUs, sets the CUDA
device or picks an autocast dtype or Lightning precision (read from the source with ``ast``); a --device
naming a GPU beyond the visible ones is one clear error; --device cuda:K is honoured or refused, never
ignored; a worker taking its device; the precision and autocast choices."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from pathweak import devices
from pathweak.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# calls only pathweak/devices.py may make, and the values only it may choose
CALLS = {"torch.cuda.device_count", "torch.cuda.set_device", "torch.cuda.is_bf16_supported", "torch.autocast",
         "torch.amp.autocast", "torch.cuda.amp.autocast", "torch.cpu.amp.autocast", "torch.is_autocast_enabled"}
PRECISIONS = {"bf16-mixed", "16-mixed", "bf16-true", "16-true"}  # Lightning's names (an encoder preset's "bf16"
# says what the model runs in, and devices.autocast_dtype turns it into a dtype)


def dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def device_choices(path: Path) -> list[str]:
    """Device calls and precision names in ``path``'s code (docstrings, comments and help texts aside)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and dotted(node.func) in CALLS:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {dotted(node.func)}")
        elif isinstance(node, ast.Constant) and node.value in PRECISIONS and id(node) not in docstrings:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_but_devices_py_chooses_devices():
    files = [p for pkg in ("pathweak", "pathweak_cli") for p in sorted((REPO / pkg).rglob("*.py"))]
    assert REPO / "pathweak" / "devices.py" in files
    assert device_choices(REPO / "pathweak" / "devices.py")  # the scan sees the calls where they are
    found = [hit for p in files if p != REPO / "pathweak" / "devices.py" for hit in device_choices(p)]
    assert found == []


def test_importing_devices_stays_light():
    """The ground floor imports no pathweak stage package and no torch when imported."""
    import subprocess
    import sys

    code = "import sys, pathweak.devices; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('pathweak.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    # pathweak/__init__ itself loads only ground-floor helpers (the lazy exports, the moved-module finder, the version)
    want = ["pathweak._lazy", "pathweak._moved", "pathweak._version", "pathweak.devices", "pathweak.errors"]
    assert out.stdout.strip() == str(want)


def test_a_gpu_beyond_the_visible_ones_is_one_clear_error():
    """--device cuda:3 where one GPU is visible: the one-line error, not CUDA's "invalid device ordinal"
    raised later, outside the per-store error handling."""
    with pytest.raises(ConfigError) as err:
        devices.parse_device("cuda:3", visible=1)
    assert str(err.value) == ("--device cuda:3 names GPU 3, and this process sees 1 GPU. Pass --device cuda:0 "
                              "(CUDA_VISIBLE_DEVICES renumbers the GPUs a process sees from 0).")
    assert str(devices.parse_device("cuda:1", visible=2)) == "cuda:1"
    assert str(devices.parse_device("auto", visible=2)) == "cuda" and str(devices.parse_device("auto", visible=0)) == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        devices.parse_device("cuda", visible=0)
    with pytest.raises(ConfigError, match="unknown device 'gpu2'"):
        devices.parse_device("gpu2")


def test_cuda_k_is_honoured_or_refused_never_ignored():
    assert devices.device_list(1, "cuda:1", visible=2) == ["cuda:1"]
    assert devices.device_list(2, "auto", visible=2) == ["cuda:0", "cuda:1"]
    assert devices.device_list("all", "cuda", visible=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert devices.device_list(2, "cpu", visible=2) == ["cpu", "cpu"]
    with pytest.raises(ConfigError, match="names one GPU and --devices 2 asks for several"):
        devices.device_list(2, "cuda:1", visible=2)
    with pytest.raises(ConfigError, match="more GPUs than the 1 present"):
        devices.device_list(2, "cuda", visible=1)


def test_training_on_several_devices_does_not_ignore_cuda_k(mil_cohort):
    """`--devices 2 --device cuda:1` used to train on processes of its own choosing (the bank's device type),
    whatever GPU was named; now the device list is checked: here (no GPU 1) it is an error."""
    import numpy as np

    from pathweak.features.bank import load_feature_bank
    from pathweak.train import TrainConfig, read_labels
    from pathweak.train.fit import fit_head
    from pathweak.train.splits import Fold

    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    table = read_labels(mil_cohort["labels"], list(bank.slide_ids))
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    rows = np.arange(len(bank))
    fold = Fold(0, rows[:6], rows[6:], np.array([], np.int64))
    if devices.visible_gpus() < 2:
        with pytest.raises(ConfigError, match="cuda:1|no CUDA device"):
            fit_head(bank, table, fold, TrainConfig(devices=2, device="cuda:1", max_epochs=1), seed=0)


def test_a_worker_takes_its_device(monkeypatch):
    monkeypatch.setenv(devices.ENV, "restored after the test")
    monkeypatch.delenv(devices.ENV)
    devices.set_device("auto")
    assert devices.ENV not in os.environ and devices.worker_device("cpu") == "cpu"
    assert devices.take_worker_device("cpu") == "cpu" and devices.ENV not in os.environ  # an unpinned process
    devices.set_device("cuda:5")  # not here: named for the process; parse_device gives the clear error later
    assert devices.worker_device() == "cuda:5" and devices.take_worker_device("cpu") == "cuda:5"


def test_precision_and_autocast_choices():
    assert devices.precision("auto", "cpu") == "32-true" and devices.precision("16-mixed", "cpu") == "16-mixed"
    assert devices.autocast_dtype("cuda", "bf16") == torch.bfloat16
    assert devices.autocast_dtype("cpu", "bf16") is None and devices.autocast_dtype("cuda", "fp32") is None
    assert not devices.autocast_active("meta")
    with devices.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert devices.out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert devices.out_of_memory(RuntimeError("Error while decoding JPEG images: CUDA out of memory."))
    assert not devices.out_of_memory(RuntimeError("Image is incomplete or truncated"))
