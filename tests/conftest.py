"""Shared fixtures: the real test data in ../shared/data, and small generated slides."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PATHWEAK_SHARED_DATA", REPO.parent / "shared" / "data"))
WSI = SHARED / "wsi"
SVS = WSI / "CMU-1-Small-Region.svs"
PYRAMID_TIFF = WSI / "pathml_small_HE_levels.tiff"
DICOM = WSI / "slidetool_test_dicom_wsi.dcm"
VOLUMES = SHARED / "volumes"
ANATOMICAL = VOLUMES / "nibabel_anatomical.nii"
FMRI_4D = VOLUMES / "nibabel_example4d.nii.gz"
BRAIN1 = VOLUMES / "pyradiomics_brain1_image.nrrd"
BRAIN1_LABEL = VOLUMES / "pyradiomics_brain1_label.nrrd"
CT_SLICE = VOLUMES / "pydicom_CT_small.dcm"


def need_shared(*paths: Path) -> None:
    """Skip the calling test, naming what is missing, when the shared real data is not beside the repo."""
    for p in paths or (SHARED,):
        if not p.exists():
            pytest.skip(f"real test data not found: {p} (put pathweak's shared/data beside the checkout)")


def resolve_import(package: str, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import ...`` written in a module of ``package``."""
    base = package
    for _ in range(max(level - 1, 0)):
        base = base.rpartition(".")[0]
    return (f"{base}.{name}" if name else base) if level else (name or "")


def imported_names(path: Path) -> set[str]:
    """Absolute names a file of this repository imports: each module, and for ``from x import y`` also
    ``x.y`` (it may be a module); relative imports resolved."""
    import ast

    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])  # a module's, or an __init__'s own
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = resolve_import(package, node.level, node.module)
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def run_cli(*args: str, cwd: Path | None = REPO, timeout: float = 600) -> subprocess.CompletedProcess:
    """``pathweak ARGS`` in a fresh interpreter (the installed entry point's module), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pathweak_cli.main", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def logged_env() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: a command's lines reach a log only if it flushes them."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def watch_log(args: list[str], log: Path, timeout: float = 900) -> tuple[int, list[tuple[float, int]], float]:
    """Run ``pathweak ARGS`` with stdout to ``log``; sample the log's line count while it runs. Returns the
    exit status, the samples (seconds since start, lines) and the seconds the run took."""
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pathweak_cli.main", *args], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
            env=logged_env(),
        )
        while proc.poll() is None:
            samples.append((time.monotonic() - started, len(log.read_text().splitlines())))
            if time.monotonic() - started > timeout:
                proc.kill()
                raise AssertionError(f"pathweak {args[0]} ran past {timeout} s")
            time.sleep(0.25)
    return proc.returncode, samples, time.monotonic() - started


def assert_clean_failure(proc: subprocess.CompletedProcess, path: Path, out: Path, *phrases: str) -> None:
    """The bad-input contract: non-zero exit, one stderr line naming ``path`` (and ``phrases``), no
    traceback, nothing left under ``out``."""
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(path) in lines[0], err
    for phrase in phrases:
        assert phrase in lines[0], err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


@pytest.fixture(scope="session")
def svs() -> Path:
    need_shared(SVS)
    return SVS


@pytest.fixture(scope="session")
def pyramid_tiff() -> Path:
    need_shared(PYRAMID_TIFF)
    return PYRAMID_TIFF


@pytest.fixture(scope="session")
def dicom() -> Path:
    need_shared(DICOM)
    return DICOM


@pytest.fixture(scope="session")
def sample_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic sample cohort (4 slides, generated once per test session)."""
    from pathweak.synthetic import make_sample_cohort

    out = tmp_path_factory.mktemp("cohort")
    make_sample_cohort(out, n_slides=4)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


LC25000 = SHARED / "labeled" / "lc25000_lung"


@pytest.fixture(scope="session")
def mil_cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small real-tile cohort through the real pipeline: 12 pseudo-slides (6x6 LC25000 tiles, half with
    tumour regions; 8 train, 4 test from disjoint source groups) → tiles → features of a tiny
    random-init ViT. Returns the paths: root, labels (with a split column), ground_truth, features."""
    need_shared(LC25000)
    import torch

    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.pseudoslides import PseudoSlideSpec, compose_pseudo_slides
    from pathweak.tiling import tile_slides

    root = tmp_path_factory.mktemp("mil_cohort")
    slides = compose_pseudo_slides(LC25000, root, PseudoSlideSpec(n_train=8, n_test=4, grid=(6, 6), seed=3))
    tiled = tile_slides([s.path for s in slides], root, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=64)
        done = extract_features([t.store for t in tiled], enc, root, num_workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert all(r.status == "extracted" for r in done), [r.error for r in done]
    return {"root": root, "labels": root / "labels.csv", "ground_truth": root / "ground_truth.csv",
            "features": Path(done[0].store).parent}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small matrices: one torch thread is fastest and immune to a busy machine (use per module with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reloaded_and_live(model, head, bank, i: int):
    """Slide ``i`` of ``bank`` through a reloaded packaged ``model`` and through the trained ``head`` it was
    saved from (eval mode, no grad): ``(model.predict output, head output)`` to compare."""
    import torch

    reloaded = model.predict(bank.bag(i), bank.grid(i))
    head.eval()
    with torch.no_grad():
        live = head(bank.bag(i).float(), bank.grid(i))
    return reloaded, live
