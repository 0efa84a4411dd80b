"""The demo cohort: the generated sample slides through every stage, sized for a few minutes on 2 CPU
cores (`pathweak demo`, the README's main command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .spec import CohortSpec


def demo_settings(pretrain_minutes: float = 1.5, workers: int = 2) -> dict[str, Any]:
    """The demo's cohort settings (the YAML `pathweak demo` writes next to its outputs)."""
    return {
        "name": "pathweak-demo",
        "tile": {"target_mpp": 0.5, "patch_px": 224},
        "pretrain": {
            "tiny": True,
            "method": "mae",
            "max_minutes": pretrain_minutes,
            "max_epochs": 1000,
            "samples_per_epoch": 512,
            "mask_ratio": 0.75,
            "lr": 1.5e-3,
            "batch_size": 64,
            "seed": 0,
        },
        "extract": {"workers": 0},
        "train": {
            "head": "abmil",
            "folds": 3,
            "seeds": [0, 1, 2],
            "lr": 1e-3,
            "max_epochs": 60,
            "min_epochs": 10,
            "patience": 15,
            "bootstrap": 200,
        },
        "heatmaps": {"formats": ["png", "geojson"]},
        "executor": {"kind": "local", "workers": workers},
    }


def write_demo_spec(data: Path, out: Path, pretrain_minutes: float = 1.5, workers: int = 2) -> CohortSpec:
    """Write ``<out>/cohort.yaml`` for the sample cohort in ``data`` (its labels.csv is the manifest) and
    load it; `pathweak cohort run <out>/cohort.yaml` reruns the same job."""
    import yaml

    from .._atomic import atomic_file

    out = Path(out).resolve()
    settings = {
        **demo_settings(pretrain_minutes, workers),
        "manifest": str((Path(data) / "labels.csv").resolve()),
        "out": str(out),
    }
    path = out / "cohort.yaml"
    with atomic_file(path) as fh:
        fh.write("# written by `pathweak demo`; rerun with: pathweak cohort run " + str(path) + "\n")
        yaml.safe_dump(settings, fh, sort_keys=False)
    return CohortSpec.load(path)
