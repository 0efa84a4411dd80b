"""A NIfTI-2 file that nibabel reads as a CIFTI-2 matrix (no voxel grid, no affine) and a GIFTI surface
are refused with one clear error, not an ``AttributeError`` traceback (the nibabel reader used to assume
every image nibabel loads is a volume)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_clean_failure, run_cli


def _cifti(path):
    from nibabel import cifti2

    brain = cifti2.BrainModelAxis.from_mask(np.ones((2, 2, 2), bool), affine=np.eye(4))
    img = cifti2.Cifti2Image(np.zeros((1, len(brain)), np.float32), header=(cifti2.ScalarAxis(["a"]), brain))
    img.to_filename(str(path))
    return path


def test_cifti_matrix_is_refused_clearly(tmp_path):
    from pathweak.errors import UnsupportedSlideError
    from pathweak.volumes import open_volume

    path = _cifti(tmp_path / "scalars.dscalar.nii")
    with pytest.raises(UnsupportedSlideError, match="Cifti2Image has no voxel grid") as err:
        open_volume(path)
    assert str(path) in str(err.value)
    proc = run_cli("info", str(path))
    assert proc.returncode == 2
    assert_clean_failure(proc, path, tmp_path / "none", "no voxel grid")


def test_gifti_surface_is_refused_by_the_nibabel_reader(tmp_path):
    import nibabel as nib
    from nibabel.gifti import GiftiDataArray, GiftiImage

    from pathweak.errors import UnsupportedSlideError
    from pathweak.volumes.readers import VOLUME_READERS

    path = tmp_path / "surface.gii"
    points = GiftiDataArray(np.zeros((10, 3), np.float32), intent="NIFTI_INTENT_POINTSET")
    nib.save(GiftiImage(darrays=[points]), str(path))
    with pytest.raises(UnsupportedSlideError, match="GiftiImage has no voxel grid"):
        VOLUME_READERS.get("nibabel")(path)
