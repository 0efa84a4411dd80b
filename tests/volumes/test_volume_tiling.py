"""Volume tiling on the real volumes: stored patches equal crops of the resampled volume, the resampling
matches an independent interpolation of the file, brain1's tumour label fractions, slice mode, re-runs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ANATOMICAL, BRAIN1, BRAIN1_LABEL, need_shared
from test_volume_io import write_dicom_series

from pathweak.config import StoreSpec, VolumeSpec
from pathweak.tiling import TileStore, tile_slides
from pathweak.volumes import open_volume, patch_boxes, prepare_volume, tile_volume
from pathweak.volumes.patches import crop

BRAIN_SPEC = VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), patch_px=8, min_foreground=0.25)


@pytest.fixture(scope="module")
def brain1_store(tmp_path_factory):
    need_shared(BRAIN1, BRAIN1_LABEL)
    out = tmp_path_factory.mktemp("brain1")
    result = tile_volume(BRAIN1, out, BRAIN_SPEC, StoreSpec(shard_tiles=16), label=BRAIN1_LABEL, progress=False)
    with TileStore.open(result.store) as store:
        yield store


def test_stored_patches_equal_crops_of_the_resampled_volume(brain1_store):
    store = brain1_store
    assert store.is_volume and store.tile_shape == (8, 8, 8) and len(store) > 100
    prepared = prepare_volume(open_volume(BRAIN1), BRAIN_SPEC)
    assert list(prepared.grid.shape) == store.attrs["volume"]["grid"]["shape"] == [81, 100, 100]
    tiles = store.read_tiles(np.arange(len(store)))
    starts, extents = patch_boxes(store)
    for tile, start, extent in zip(tiles, starts, extents, strict=True):
        assert np.array_equal(tile, crop(prepared.data, start, extent))
    # a patch at the far faces is padded with 0 (the stored value of intensities <= lo)
    assert (starts + extents > np.array(prepared.grid.shape)).any()
    # Zarr reads the same tiles through its own codecs
    import zarr

    assert np.array_equal(zarr.open_array(str(store.path / "tiles"), mode="r")[5], tiles[5])
    # foreground fractions and the min_foreground filter
    assert (store.tissue_fraction >= 0.25).all() and store.tissue_mask.shape == (81, 100, 100)


def test_resampling_matches_an_independent_interpolation_of_the_file(brain1_store):
    """Grid voxel centres -> RAS -> the NRRD's own index space (via SimpleITK's geometry, LPS) -> trilinear
    interpolation of the raw file array (scipy) must equal the resampled image; the uint8 values follow
    the recorded intensity mapping."""
    import SimpleITK as sitk
    from scipy import ndimage

    itk = sitk.ReadImage(str(BRAIN1))
    raw = sitk.GetArrayFromImage(itk).astype(np.float64)  # (k, j, i)
    prepared = prepare_volume(open_volume(BRAIN1), BRAIN_SPEC)
    rng = np.random.default_rng(1)
    zyx = np.column_stack([rng.integers(0, n, 3000) for n in prepared.grid.shape])
    ras = prepared.grid.index_to_world(zyx)
    lps = ras * [-1, -1, 1]
    ijk = np.array([itk.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in lps])
    inside = np.all((ijk >= 0) & (ijk <= np.array(itk.GetSize()) - 1), axis=1)  # between the outer voxel centres
    assert inside.mean() > 0.8
    expected = ndimage.map_coordinates(raw, ijk[inside][:, ::-1].T, order=1)
    got = prepared.image[tuple(zyx[inside].T)]
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-2)
    record = brain1_store.attrs["volume"]["intensity"]
    lo, hi = record["lo"], record["hi"]
    assert record["method"] == "percentile" and lo < hi
    manual = np.rint(np.clip((prepared.image - lo) / (hi - lo), 0, 1) * 255)
    assert np.abs(manual - prepared.data).max() <= 1  # float32 vs float64 rounding at .5 only
    assert (manual == prepared.data).mean() > 0.999


def test_brain1_tumour_label_fractions(brain1_store, tmp_path):
    """Each patch's label fraction equals a nearest-voxel count taken straight from the label NRRD through
    SimpleITK's geometry; patches inside the tumour have fraction 1, patches far from it 0."""
    import SimpleITK as sitk
    from scipy import ndimage

    spec = VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), patch_px=3, min_foreground=0.5)
    result = tile_volume(BRAIN1, tmp_path, spec, label=BRAIN1_LABEL, progress=False)
    store = TileStore.open(result.store)
    fractions = store.label_fraction
    assert store.attrs["volume"]["label"]["values"] == [1] and fractions.shape == (len(store), 1)
    itk = sitk.ReadImage(str(BRAIN1_LABEL))
    label = sitk.GetArrayFromImage(itk)
    matrix = np.array(itk.GetDirection()).reshape(3, 3) * np.array(itk.GetSpacing())
    from pathweak.volumes import Grid

    grid = Grid.from_attrs(store.attrs["volume"]["grid"])
    starts, extents = patch_boxes(store)
    offsets = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    points = (starts[:, None, :] + offsets[None]).reshape(-1, 3)
    lps = grid.index_to_world(points) * [-1, -1, 1]
    continuous = np.linalg.solve(matrix, (lps - np.array(itk.GetOrigin())).T).T
    ijk = np.rint(continuous).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(itk.GetSize())), axis=1)
    values = np.zeros(len(points))
    values[ok] = label[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
    expected = values.reshape(len(starts), -1).mean(axis=1)
    # a grid voxel centre exactly half-way between two label voxels may go either way: leave those patches out
    tie = (np.abs(np.abs(continuous - np.floor(continuous)) - 0.5) < 1e-6).any(axis=1)
    clear = ~tie.reshape(len(starts), -1).any(axis=1)
    assert clear.mean() > 0.5
    assert np.allclose(fractions[clear, 0], expected[clear], atol=1e-6)
    # inside: fraction 1; far (centre > 30 mm from every tumour voxel): 0
    assert (fractions[:, 0] == 1).sum() >= 5
    distance = ndimage.distance_transform_edt(label == 0, sampling=itk.GetSpacing()[::-1])
    centres = grid.index_to_world(starts + 1) * [-1, -1, 1]
    cijk = np.rint(np.linalg.solve(matrix, (centres - np.array(itk.GetOrigin())).T).T).astype(int)
    cijk = np.clip(cijk, 0, np.array(itk.GetSize()) - 1)
    far = distance[cijk[:, 2], cijk[:, 1], cijk[:, 0]] > 30
    assert far.sum() > 1000 and (fractions[far, 0] == 0).all()


def test_slice_mode_tiles_are_rgb_like_slide_tiles(tmp_path):
    need_shared(ANATOMICAL)
    spec = VolumeSpec(mode="slices", planes=("axial", "coronal", "sagittal"), patch_px=32, slice_step=2,
                      min_foreground=0.3)
    result = tile_volume(ANATOMICAL, tmp_path, spec, progress=False)
    store = TileStore.open(result.store)
    assert store.tile_shape == (32, 32, 3) and store.tile_px == 32 and store.compression == "lossless"
    plane = np.asarray(__import__("zarr").open_array(str(store.path / "plane"))[...])
    assert set(plane.tolist()) == {0, 1, 2}
    tiles = store.read_tiles(np.arange(len(store)))
    assert tiles.dtype == np.uint8 and tiles.shape[1:] == (32, 32, 3)
    assert np.array_equal(tiles[..., 0], tiles[..., 2])  # grey repeated
    prepared = prepare_volume(open_volume(ANATOMICAL), spec)
    starts, extents = patch_boxes(store)
    for tile, start, extent, p in zip(tiles, starts, extents, plane, strict=True):
        assert extent[p] == 1 and start[p] % 2 == 0
        assert np.array_equal(tile[..., 0], crop(prepared.data, start, extent).squeeze(axis=int(p)))


def test_rerun_skips_and_a_changed_spec_retiles(tmp_path):
    need_shared(ANATOMICAL)
    spec = VolumeSpec(patch_px=16)
    first = tile_slides([ANATOMICAL], tmp_path, volume=spec, progress=False)[0]
    assert first.status == "tiled" and first.n_tiles > 0
    again = tile_slides([ANATOMICAL], tmp_path, volume=spec, progress=False)[0]
    assert again.status == "skipped" and again.n_tiles == first.n_tiles
    changed = tile_slides([ANATOMICAL], tmp_path, volume=VolumeSpec(patch_px=16, normalize="zscore"), progress=False)[0]
    assert changed.status == "tiled"
    store = TileStore.open(changed.store)
    record = store.attrs["volume"]["intensity"]
    assert record["method"] == "zscore" and record["lo"] == pytest.approx(record["mean"] - 3 * record["std"])
    assert [p.name for p in (tmp_path / "tiles").iterdir()] == ["nibabel_anatomical.zarr"]


def test_foreground_mask_covers_the_head_and_not_the_air():
    need_shared(BRAIN1, BRAIN1_LABEL)
    prepared = prepare_volume(open_volume(BRAIN1), BRAIN_SPEC, open_volume(BRAIN1_LABEL))
    fg = prepared.foreground
    assert 0.3 < fg.mean() < 0.8
    assert fg[prepared.label == 1].mean() > 0.99  # the tumour is inside the head
    corners = [fg[z, y, x] for z in (0, -1) for y in (0, -1) for x in (0, -1)]
    assert not any(corners)
    # the body mask is one solid piece per axial slice: no holes inside the skull
    from scipy import ndimage

    z = fg.shape[0] // 2
    assert np.array_equal(ndimage.binary_fill_holes(fg[z]), fg[z])


def test_a_dicom_series_folder_without_file_extensions(tmp_path):
    """CT/MR slices often carry no extension: the folder is still found and tiled as one volume, on the
    same grid as the NRRD it was written from."""
    import SimpleITK as sitk

    from pathweak.tiling import expand_slide_paths

    need_shared(BRAIN1)
    series = tmp_path / "brain1_series"
    write_dicom_series(sitk.ReadImage(str(BRAIN1)), series, suffix="")
    assert expand_slide_paths([series]) == [series]
    spec = VolumeSpec(spacing_mm=(4.0, 4.0, 4.0), patch_px=16)
    (result,) = tile_slides(expand_slide_paths([series]), tmp_path / "out", volume=spec, progress=False)
    store = TileStore.open(result.store)
    assert result.status == "tiled" and store.attrs["volume"]["format"] == "dicom-series"
    reference = prepare_volume(open_volume(BRAIN1), spec)
    assert store.attrs["volume"]["grid"] == reference.grid.to_attrs()
    assert np.array_equal(store.read_tiles([0])[0], crop(reference.data, store.coords[0], np.array([16, 16, 16])))


def test_volumes_tile_in_parallel_workers_like_in_one_process(tmp_path):
    """``workers=2`` tiles the volumes of a run in worker processes: the stores hold the same patches as a
    one-process run, and a damaged volume among them fails alone, with its name, leaving no store."""
    need_shared(ANATOMICAL, BRAIN1)
    broken = tmp_path / "broken.nii"
    broken.write_bytes(ANATOMICAL.read_bytes()[:200])  # header only: the voxel data is cut off
    inputs = [ANATOMICAL, BRAIN1, broken]
    spec = VolumeSpec(spacing_mm=(4.0, 4.0, 4.0), patch_px=8)
    serial = tile_slides(inputs, tmp_path / "serial", volume=spec, workers=1, progress=False)
    parallel = tile_slides(inputs, tmp_path / "parallel", volume=spec, workers=2, progress=False)
    assert [r.status for r in parallel] == [r.status for r in serial] == ["tiled", "tiled", "failed"]
    assert "broken.nii" in parallel[2].error
    assert sorted(p.name for p in (tmp_path / "parallel" / "tiles").iterdir()) == [
        "nibabel_anatomical.zarr", "pyradiomics_brain1_image.zarr"]
    for a, b in zip(serial[:2], parallel[:2], strict=True):
        sa, sb = TileStore.open(a.store), TileStore.open(b.store)
        assert len(sa) == len(sb) > 0 and np.array_equal(sa.coords, sb.coords)
        assert np.array_equal(sa.read_tiles(np.arange(len(sa))), sb.read_tiles(np.arange(len(sb))))
