"""pathweak's volume transforms against MONAI's (the reference implementations): reorientation to RAS equals
``Orientation("RAS")`` and the uint8 mapping equals ``ScaleIntensityRange`` with the recorded range. pathweak
does not call MONAI itself so that `pathweak tile` stays free of torch (3-4 s of start-up)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ANATOMICAL, BRAIN1, FMRI_4D, need_shared

from pathweak.config import VolumeSpec
from pathweak.volumes import open_volume, prepare_volume

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path, timepoint", [(ANATOMICAL, None), (FMRI_4D, 0)])  # MONAI reads NRRD only with itk
def test_reorientation_equals_monai_orientation(path, timepoint):
    from monai.data import MetaTensor
    from monai.transforms import LoadImage, Orientation

    need_shared(path)
    image = LoadImage(image_only=True, ensure_channel_first=True)(str(path))  # RAS affine, (C, x, y, z)
    if timepoint is not None:
        image = image[timepoint : timepoint + 1] if image.shape[0] > 1 else image
    oriented = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(MetaTensor(image.as_tensor(), affine=image.affine))
    volume = open_volume(path, timepoint=timepoint)
    assert np.allclose(np.asarray(oriented.affine), volume.affine, atol=1e-4)
    assert np.array_equal(np.asarray(oriented[0]).transpose(2, 1, 0), volume.array())


def test_uint8_mapping_equals_monai_scale_intensity_range():
    from monai.transforms import ScaleIntensityRange

    need_shared(BRAIN1)
    for spec in (VolumeSpec(spacing_mm=(2.0, 2.0, 2.0)), VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), normalize="zscore"),
                 VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), normalize="window", window=(0.0, 1000.0))):
        prepared = prepare_volume(open_volume(BRAIN1), spec)
        lo, hi = prepared.intensity["lo"], prepared.intensity["hi"]
        scaled = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=255.0, clip=True)(prepared.image)
        reference = np.rint(np.asarray(scaled))
        assert np.abs(reference - prepared.data).max() <= 1 and (reference == prepared.data).mean() > 0.999
