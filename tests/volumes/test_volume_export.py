"""Per-patch scores written back as NIfTI: the heatmap has the source's geometry and a known patch lands
where it was cut from (checked in physical space through SimpleITK, independently of nibabel)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ANATOMICAL, BRAIN1, BRAIN1_LABEL, need_shared

from pathweak.config import VolumeSpec
from pathweak.errors import ConfigError
from pathweak.tiling import TileStore
from pathweak.volumes import Grid, patch_boxes, scores_to_nifti, tile_volume


@pytest.fixture(scope="module")
def brain1_store(tmp_path_factory):
    need_shared(BRAIN1, BRAIN1_LABEL)
    out = tmp_path_factory.mktemp("brain1x")
    spec = VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), patch_px=6, min_foreground=0.5)
    result = tile_volume(BRAIN1, out, spec, label=BRAIN1_LABEL, progress=False)
    return TileStore.open(result.store)


def test_a_scored_patch_lands_in_the_same_physical_space(brain1_store, tmp_path):
    import SimpleITK as sitk

    store = brain1_store
    known = int(np.argmax(store.label_fraction[:, 0]))  # the patch most inside the tumour
    assert store.label_fraction[known, 0] > 0.5
    scores = np.zeros(len(store), np.float32)
    scores[known] = 1.0
    out = scores_to_nifti(store, scores, tmp_path / "heat" / "brain1_heat.nii.gz", background=0.0)
    assert out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]

    heat = sitk.ReadImage(str(out))
    source = sitk.ReadImage(str(BRAIN1))
    assert heat.GetSize() == source.GetSize()
    assert np.allclose(heat.GetOrigin(), source.GetOrigin(), atol=1e-3)
    assert np.allclose(heat.GetSpacing(), source.GetSpacing(), atol=1e-4)
    assert np.allclose(heat.GetDirection(), source.GetDirection(), atol=1e-5)

    # every source voxel whose centre lies inside the patch's physical box is 1, every other one 0
    grid = Grid.from_attrs(store.attrs["volume"]["grid"])
    starts, extents = patch_boxes(store)
    lo = starts[known] - 0.5
    hi = starts[known] + extents[known] - 0.5
    arr = sitk.GetArrayFromImage(heat)  # (k, j, i)
    kji = np.argwhere(np.ones(arr.shape, bool))
    lps = np.array(heat.GetOrigin()) + (kji[:, ::-1] * heat.GetSpacing()) @ np.array(heat.GetDirection()).reshape(3, 3).T
    zyx = grid.world_to_index(lps * [-1, -1, 1])
    inside = np.all((zyx > lo) & (zyx < hi), axis=1)
    boundary = np.any(np.isclose(zyx, lo) | np.isclose(zyx, hi), axis=1)
    values = arr[tuple(kji.T)]
    assert inside.sum() > 50
    assert (values[inside & ~boundary] == 1).all() and (values[~inside & ~boundary] == 0).all()
    # and it sits on the tumour of the label map (the source-resolution fraction differs from the stored one,
    # which counts the label resampled to 2 mm, by the 6.5 mm slices' quantisation)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(BRAIN1_LABEL)))[tuple(kji.T)]
    assert label[values == 1].mean() > 0.5 and label[values == 0].mean() < 0.01


def test_overlapping_and_multichannel_scores(tmp_path):
    """Slice patches with two score columns: a 4D heatmap in the file's voxel order (nibabel, L-A-S)."""
    import nibabel as nib

    need_shared(ANATOMICAL)
    spec = VolumeSpec(mode="slices", planes=("axial", "sagittal"), patch_px=24, overlap_px=12, spacing_mm=None,
                      min_foreground=0.2)
    store = TileStore.open(tile_volume(ANATOMICAL, tmp_path, spec, progress=False).store)
    scores = np.column_stack([np.ones(len(store)), np.arange(len(store))]).astype(np.float32)
    out = scores_to_nifti(store, scores, tmp_path / "heat.nii", reduce="max")
    img = nib.load(str(out))
    source = nib.load(str(ANATOMICAL))
    assert img.shape == source.shape + (2,) and np.allclose(img.affine, source.affine)
    data = np.asarray(img.dataobj)
    covered = ~np.isnan(data[..., 0])
    assert covered.mean() > 0.2 and (data[covered, 0] == 1).all()
    assert np.nanmax(data[..., 1]) == len(store) - 1
    # mean over overlaps: constant scores stay constant
    mean = nib.load(str(scores_to_nifti(store, np.full(len(store), 0.25), tmp_path / "m.nii.gz"))).get_fdata()
    assert np.allclose(mean[~np.isnan(mean)], 0.25)


def test_bad_score_arguments(brain1_store, tmp_path, svs):
    with pytest.raises(ConfigError, match="scores for a store of"):
        scores_to_nifti(brain1_store, np.zeros(3), tmp_path / "x.nii.gz")
    with pytest.raises(ConfigError, match="needs a .nii or .nii.gz name"):
        scores_to_nifti(brain1_store, np.zeros(len(brain1_store)), tmp_path / "x.png")
    from pathweak.config import TileSpec
    from pathweak.tiling import tile_slide

    slide_store = TileStore.open(tile_slide(svs, tmp_path, TileSpec(patch_px=512), progress=False).store)
    with pytest.raises(ConfigError, match="not a volume TileStore"):
        scores_to_nifti(slide_store, np.zeros(len(slide_store)), tmp_path / "x.nii.gz")
    assert not list(tmp_path.glob("*.nii*"))
