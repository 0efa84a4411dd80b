"""Shared fixtures: the real test data in ../shared/data, and small generated slides."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PATHWEAK_SHARED_DATA", REPO.parent / "shared" / "data"))
WSI = SHARED / "wsi"
SVS = WSI / "CMU-1-Small-Region.svs"
PYRAMID_TIFF = WSI / "pathml_small_HE_levels.tiff"
DICOM = WSI / "slidetool_test_dicom_wsi.dcm"


def need_shared(*paths: Path) -> None:
    """Skip the calling test, naming what is missing, when the shared real data is not beside the repo."""
    for p in paths or (SHARED,):
        if not p.exists():
            pytest.skip(f"real test data not found: {p} (put pathweak's shared/data beside the checkout)")


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
