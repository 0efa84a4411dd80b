"""The small-profile correction of the resolution estimate (pathweak.resolution.sampling): drawn discs of known
size, measured by the estimator's own segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from pathweak.resolution.discs import drawn_discs, measured_ratio
from pathweak.resolution.estimate import measure
from pathweak.resolution.sampling import SAMPLING_BIAS, sampling_bias


def test_drawn_discs_have_the_drawn_size():
    region = drawn_discs(12.0, size=256, spread=0.0)
    prof, d = measure([region])
    assert len(prof) >= 20
    assert d == pytest.approx(12.0, rel=0.04)  # large discs: the measurement is within a few percent
    assert float(region.h.max()) == pytest.approx(1.0, abs=1e-3) and float(region.h.min()) == pytest.approx(0.2)


def test_the_table_is_what_drawn_discs_measure():
    """SAMPLING_BIAS is regenerated (fewer seeds) from drawn discs: 3 px discs measure ~8% wider than 12 px ones."""
    small_px, small = measured_ratio(3.0, seeds=(0, 1))
    _, large = measured_ratio(12.0, seeds=(0,))
    assert small / large == pytest.approx(sampling_bias(small_px), abs=0.015)
    assert 1.05 < sampling_bias(small_px) < 1.12


def test_the_correction_fades_for_large_profiles():
    sizes = [m for m, _ in SAMPLING_BIAS]
    factors = [sampling_bias(m) for m in np.geomspace(2.5, 30, 20)]
    assert sizes == sorted(sizes)
    assert all(a >= b - 0.002 for a, b in zip(factors, factors[1:], strict=False))  # falls with the size
    assert sampling_bias(20.0) == pytest.approx(1.0, abs=0.005) and sampling_bias(8.0) < 1.01
    assert sampling_bias(3.0) > 1.05


def test_a_coarse_copy_of_the_real_slide_is_corrected_towards_its_own_scale(svs):
    """CMU-1-Small-Region 4x coarser: nuclei ~3.5 px wide, measured ~6% too wide; the corrected estimate
    follows the pixel size more closely than the uncorrected one; at the slide's own scale it barely changes."""
    import cv2

    from pathweak.io import open_slide
    from pathweak.resolution import estimate_mpp

    with open_slide(svs) as s:
        crop = s.read_region((0, 0), 0, s.dimensions)[400:2448, 100:2148]
    native = estimate_mpp(crop)
    coarse = estimate_mpp(cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA))
    assert native.ok and coarse.ok, (native.reason, coarse.reason)
    assert native.sampling_factor is not None and native.sampling_factor < 1.005 and native.method == "nuclei-v5"
    assert coarse.nucleus_px < 4 and coarse.sampling_factor > 1.04
    corrected = coarse.mpp / (4 * native.mpp)
    assert abs(np.log(corrected)) < abs(np.log(corrected / coarse.sampling_factor))
    assert 1 / 1.2 < corrected < 1.2
