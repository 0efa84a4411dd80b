"""Reading volumes: every format maps a voxel to the same physical point (checked against SimpleITK's and
the DICOM header's own geometry), 4D series, and clear errors for unreadable files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import ANATOMICAL, BRAIN1, CT_SLICE, FMRI_4D, SHARED, VOLUMES, need_shared

from pathweak.errors import ConfigError, CorruptSlideError, SlideFormatError, UnsupportedSlideError
from pathweak.volumes import open_volume, volume_format


def write_dicom_series(image, folder, suffix: str = ".dcm") -> None:
    """Write a 3D SimpleITK image as an MR DICOM series, one file per slice, with the geometry tags.

    GDCM's writer switches the process's LC_CTYPE to "C" (so later subprocess output would decode as
    ASCII): the locale is restored afterwards."""
    import locale

    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_CTYPE, None)
    try:
        _write_slices(sitk, image, folder, suffix)
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def _write_slices(sitk, image, folder, suffix: str) -> None:
    folder.mkdir()
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # also for file names without .dcm
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        tags = {
            "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.1", "0020|0013": str(k + 1),
            "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0018|0050": str(image.GetSpacing()[2]),
        }
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}{suffix}"))
        writer.Execute(s)


def _check_against_itk(volume, itk_image, n=200, seed=0):
    """Random file voxels: SimpleITK's physical point (LPS -> RAS) must land exactly on the pathweak voxel
    that holds the same value."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(itk_image)  # (z, y, x) file order
    if arr.ndim == 4:
        arr = arr[volume.timepoint]
    size = itk_image.GetSize()[:3]
    rng = np.random.default_rng(seed)
    data = volume.array()
    for _ in range(n):
        ijk = [int(rng.integers(0, s)) for s in size]
        lps = itk_image.TransformIndexToPhysicalPoint(ijk + [0] * (itk_image.GetDimension() - 3))[:3]
        ras = np.array([-lps[0], -lps[1], lps[2]])
        zyx = volume.grid.world_to_index(ras)[0]
        assert np.allclose(zyx, np.round(zyx), atol=1e-4), (ijk, zyx)
        z, y, x = (int(v) for v in np.round(zyx))
        assert data[z, y, x] == arr[ijk[2], ijk[1], ijk[0]]
        assert np.allclose(volume.grid.index_to_world([[z, y, x]])[0], ras, atol=1e-4)


def test_formats_are_recognised_by_content():
    need_shared(VOLUMES)
    assert volume_format(ANATOMICAL) == "nifti" and volume_format(FMRI_4D) == "nifti"
    assert volume_format(BRAIN1) == "nrrd" and volume_format(CT_SLICE) == "dicom"
    # whole-slide images are not volumes, including the DICOM-WSI file
    assert volume_format(SHARED / "wsi" / "slidetool_test_dicom_wsi.dcm") is None
    assert volume_format(SHARED / "wsi" / "CMU-1-Small-Region.svs") is None


def test_nifti_and_nrrd_of_the_same_geometry_agree(tmp_path):
    """brain1 written to NIfTI by SimpleITK: nibabel's reading of the NIfTI and SimpleITK's of the NRRD give
    the same RAS grid and voxels, and both agree with SimpleITK's own index -> physical mapping."""
    import SimpleITK as sitk

    need_shared(BRAIN1)
    nifti = tmp_path / "brain1.nii.gz"
    itk = sitk.ReadImage(str(BRAIN1))
    sitk.WriteImage(itk, str(nifti))
    a, b = open_volume(BRAIN1), open_volume(nifti)
    assert (a.reader, b.reader) == ("simpleitk", "nibabel")
    assert a.grid.mismatch(b.grid) is None and np.allclose(a.affine, b.affine, atol=1e-5)
    assert np.array_equal(a.array(), b.array())
    assert a.shape == (25, 256, 256) and a.spacing == pytest.approx((6.5, 0.78125, 0.78125))
    assert np.allclose(a.grid.direction, np.eye(3))  # reoriented to RAS
    _check_against_itk(a, itk)
    _check_against_itk(b, itk)


@pytest.mark.parametrize("path, timepoint", [(ANATOMICAL, None), (FMRI_4D, 1)])
def test_nibabel_and_simpleitk_readers_agree(path, timepoint):
    """The same NIfTI through both readers (the 4D one is oblique and big-endian-free; anatomical is
    big-endian, stored L-A-S)."""
    import SimpleITK as sitk

    need_shared(path)
    a = open_volume(path, timepoint=timepoint)
    b = open_volume(path, timepoint=timepoint, reader="simpleitk")
    assert np.allclose(a.affine, b.affine, atol=1e-4)
    assert np.array_equal(a.array(), b.array()) and a.array().dtype.isnative
    _check_against_itk(a, sitk.ReadImage(str(path)), n=100)


def test_dicom_slice_geometry_comes_from_its_header():
    """CT_small: origin and axes from the DICOM tags ImagePositionPatient / ImageOrientationPatient (LPS)."""
    import SimpleITK as sitk

    need_shared(CT_SLICE)
    v = open_volume(CT_SLICE)
    assert v.format == "dicom" and v.shape == (1, 128, 128)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(CT_SLICE))
    reader.ReadImageInformation()
    ipp = np.array([float(t) for t in reader.GetMetaData("0020|0032").split("\\")])
    iop = np.array([float(t) for t in reader.GetMetaData("0020|0037").split("\\")])
    spacing = np.array([float(t) for t in reader.GetMetaData("0028|0030").split("\\")])  # row, column
    for i, j in [(0, 0), (127, 0), (5, 90), (127, 127)]:  # column i, row j
        lps = ipp + iop[:3] * spacing[1] * i + iop[3:] * spacing[0] * j
        ras = lps * [-1, -1, 1]
        z, y, x = np.round(v.grid.world_to_index(ras)[0]).astype(int)
        assert v.array()[z, y, x] == sitk.GetArrayFromImage(sitk.ReadImage(str(CT_SLICE)))[0, j, i]
    _check_against_itk(v, sitk.ReadImage(str(CT_SLICE)), n=50)


def test_metaimage_and_dicom_series_read_like_the_nrrd(tmp_path):
    import SimpleITK as sitk

    need_shared(BRAIN1)
    itk = sitk.ReadImage(str(BRAIN1))
    sitk.WriteImage(itk, str(tmp_path / "brain1.mha"))
    write_dicom_series(itk, tmp_path / "series")
    ref = open_volume(BRAIN1)
    for path, fmt in [(tmp_path / "brain1.mha", "metaimage"), (tmp_path / "series", "dicom-series")]:
        v = open_volume(path)
        assert v.format == fmt and v.grid.mismatch(ref.grid) is None
        assert np.array_equal(v.array(), ref.array())


def test_source_order_round_trip():
    need_shared(ANATOMICAL, BRAIN1)
    import nibabel as nib

    v = open_volume(ANATOMICAL)
    assert np.array_equal(v.to_source_order(v.array()), np.asanyarray(nib.load(str(ANATOMICAL)).dataobj))
    assert v.info()["source_axes"] == "LAS" and v.source_shape == (33, 41, 25)


def test_4d_series_needs_a_timepoint():
    need_shared(FMRI_4D)
    v = open_volume(FMRI_4D)
    assert v.n_timepoints == 2 and v.info()["timepoints"] == 2  # info works without one
    with pytest.raises(UnsupportedSlideError, match=r"4D series of 2 timepoints.*--timepoint N \(0\.\.1\)"):
        v.array()
    with pytest.raises(ConfigError, match="timepoint 2 is out of range"):
        open_volume(FMRI_4D, timepoint=2)
    assert open_volume(FMRI_4D, timepoint=0).array().shape == (24, 96, 128)


def test_unreadable_volumes_are_clear_errors(tmp_path):
    need_shared(ANATOMICAL, BRAIN1)
    text = tmp_path / "notes.nii"
    text.write_text("not a volume\n" * 50)
    with pytest.raises(SlideFormatError, match="notes.nii: not a readable NIfTI file"):
        open_volume(text)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(ANATOMICAL.read_bytes()[:40000])
    with pytest.raises(CorruptSlideError, match="truncated"):
        open_volume(cut)
    cut_gz = tmp_path / "cut.nii.gz"
    cut_gz.write_bytes(gzip.compress(ANATOMICAL.read_bytes())[:30000])
    with pytest.raises(CorruptSlideError, match="cut.nii.gz: the voxel data cannot be read"):
        open_volume(cut_gz).array()
    cut_nrrd = tmp_path / "cut.nrrd"
    cut_nrrd.write_bytes(BRAIN1.read_bytes()[:500000])
    with pytest.raises(CorruptSlideError, match="cut.nrrd: the voxel data cannot be read") as info:
        open_volume(cut_nrrd).array()
    assert "\n" not in str(info.value) and "0x" not in str(info.value)  # ITK's multi-line text, cleaned


def test_open_slide_points_volumes_to_open_volume():
    from pathweak.io import open_slide

    need_shared(BRAIN1)
    with pytest.raises(SlideFormatError, match=r"3D volume \(nrrd\).*open_volume"):
        open_slide(BRAIN1)


def test_a_transposed_and_flipped_file_gives_the_same_volume(tmp_path):
    """The same anatomy stored with permuted and flipped voxel axes (as a sagittal acquisition would be)
    reads as the identical RAS volume, through nibabel and through SimpleITK."""
    import nibabel as nib

    need_shared(ANATOMICAL)
    img = nib.load(str(ANATOMICAL))
    data = np.asanyarray(img.dataobj)
    # new voxel axes (a, b, c) = (z, -x, y) of the file
    permuted = np.flip(data.transpose(2, 0, 1), axis=1)
    old = img.affine
    affine = np.eye(4)
    affine[:3, 0] = old[:3, 2]
    affine[:3, 1] = -old[:3, 0]
    affine[:3, 2] = old[:3, 1]
    affine[:3, 3] = old[:3, 3] + old[:3, 0] * (data.shape[0] - 1)
    path = tmp_path / "permuted.nii.gz"
    nib.save(nib.Nifti1Image(permuted, affine), str(path))
    ref = open_volume(ANATOMICAL)
    for reader in ("nibabel", "simpleitk"):
        v = open_volume(path, reader=reader)
        assert v.info()["source_axes"] == "SRA" and v.grid.mismatch(ref.grid) is None
        assert np.array_equal(v.array(), ref.array())
        assert np.array_equal(v.to_source_order(v.array()), permuted)
