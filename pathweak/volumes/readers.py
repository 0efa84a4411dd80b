"""Volume readers: NIfTI through nibabel; NRRD, MetaImage, DICOM files and series through SimpleITK.

A reader returns a :class:`RawVolume`: the file's spatial shape and RAS affine in the file's own voxel
order, the number of timepoints, and a function loading one timepoint as an (x, y, z) array.
:func:`pathweak.volumes.open_volume` turns that into a :class:`~pathweak.volumes.Volume`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from .._registry import Registry
from ..errors import CorruptSlideError, SlideFormatError, UnsupportedSlideError
from ..errors import reason as _short
from .geometry import itk_affine, lps_to_ras

T = TypeVar("T")
SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD, MetaImage (.mha, .mhd), a DICOM file or a folder of one DICOM series"


@dataclass(frozen=True)
class RawVolume:
    """What a reader found: geometry in the file's voxel order, and a loader of one timepoint."""

    shape_xyz: tuple[int, int, int]
    affine: np.ndarray  # (x, y, z, 1) file index -> RAS mm
    n_timepoints: int
    dtype: str
    load: Callable[[int], np.ndarray]  # timepoint -> (x, y, z) array in the file's voxel order


VOLUME_READERS: Registry[Callable[[Path], RawVolume]] = Registry("volume reader")


@VOLUME_READERS.register("nibabel")
def read_nibabel(path: Path) -> RawVolume:
    """NIfTI-1/2 (and Analyze) through nibabel; its ``affine`` (sform, else qform) is RAS already."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise SlideFormatError(
            f"not a readable NIfTI file ({_short(exc)})", path=path, fix=f"check the file; pathweak reads {SUPPORTED}"
        ) from None
    if not isinstance(img, SpatialImage):  # a GIFTI surface or CIFTI matrix: no voxel grid, no affine
        raise UnsupportedSlideError(
            f"a {type(img).__name__} has no voxel grid", path=path, fix=f"pathweak reads volumes: {SUPPORTED}"
        )
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise UnsupportedSlideError(
            f"a {len(shape)}D image ({'x'.join(map(str, shape))})",
            path=path,
            fix="pathweak reads 3D volumes and 4D series",
        )
    _check_nifti_size(path, img)
    spatial = (shape + (1, 1))[:3]
    n_t = shape[3] if len(shape) == 4 else 1

    def load(t: int) -> np.ndarray:
        proxy = img.dataobj
        index: tuple[slice | int, ...] = (slice(None),) * len(img.shape)
        if len(img.shape) >= 4:
            index = (slice(None),) * 3 + (t,) + (0,) * (len(img.shape) - 4)
        data = _reading(path, lambda: np.asanyarray(proxy[index]))
        return data.reshape(spatial)

    return RawVolume(spatial, np.asarray(img.affine, float), n_t, str(img.get_data_dtype()), load)  # type: ignore[arg-type]


@VOLUME_READERS.register("simpleitk")
def read_simpleitk(path: Path) -> RawVolume:
    """Any file SimpleITK reads (NRRD, MetaImage, DICOM, NIfTI...), or a folder holding one DICOM series.
    ITK's LPS geometry is converted to RAS."""
    import SimpleITK as sitk

    if path.is_dir():
        return _read_dicom_series(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise SlideFormatError(
            f"not a volume SimpleITK can read ({_itk_message(exc)})",
            path=path,
            fix=f"check the file; pathweak reads {SUPPORTED}",
        ) from None
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetNumberOfComponents() != 1:
        raise UnsupportedSlideError(
            f"an image with {reader.GetNumberOfComponents()} components per voxel (colour or vector data)",
            path=path,
            fix="pathweak tiles single-channel (grey-value) volumes; export one channel",
        )
    if len(size) > 4:
        raise UnsupportedSlideError(f"a {len(size)}D image", path=path, fix="pathweak reads 3D volumes and 4D series")
    affine = lps_to_ras(itk_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()))
    spatial = (size + (1, 1))[:3]
    n_t = size[3] if len(size) == 4 else 1

    def load(t: int) -> np.ndarray:
        image = _reading(path, lambda: sitk.ReadImage(str(path)))
        arr = sitk.GetArrayViewFromImage(image)  # (t,) z, y, x
        arr = arr[t] if arr.ndim == 4 else arr.reshape(spatial[::-1])
        return np.ascontiguousarray(arr.transpose(2, 1, 0))

    return RawVolume(spatial, affine, n_t, _itk_dtype(reader), load)  # type: ignore[arg-type]


def _read_dicom_series(folder: Path) -> RawVolume:
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise SlideFormatError(
            "the folder holds no DICOM image series",
            path=folder,
            fix="point to a folder of DICOM slices of one series, or to a volume file",
        )
    if len(ids) > 1:
        raise UnsupportedSlideError(
            f"the folder holds {len(ids)} DICOM series", path=folder, fix="put each series in its own folder"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = _reading(folder, reader.Execute)
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise UnsupportedSlideError("the DICOM series is not a grey-value 3D volume", path=folder)
    affine = lps_to_ras(itk_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    return RawVolume(tuple(data.shape), affine, 1, str(data.dtype), lambda t: data)


def _check_nifti_size(path: Path, img: object) -> None:
    """An uncompressed NIfTI shorter than its header promises is truncated: say so before reading."""
    if path.name.lower().endswith(".gz"):
        return
    header = img.header  # type: ignore[attr-defined]
    try:
        needed = int(header.get_data_offset()) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize  # type: ignore[attr-defined]
    except Exception:
        return
    if path.is_file() and path.stat().st_size < needed:
        raise CorruptSlideError(
            f"the file is truncated: {path.stat().st_size} bytes, its header promises {needed}",
            path=path,
            fix="the copy is incomplete; copy or export the volume again",
        )


def _reading(path: Path, read: Callable[[], T]) -> T:
    """Run a data read, turning any failure into a one-line 'damaged' error naming the file."""
    try:
        return read()
    except MemoryError:
        raise
    except Exception as exc:
        text = _itk_message(exc) if isinstance(exc, RuntimeError) else _short(exc)
        raise CorruptSlideError(
            f"the voxel data cannot be read ({text})",
            path=path,
            fix="the file is damaged or incomplete; copy or export it again",
        ) from None


def _itk_dtype(reader: object) -> str:
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())  # type: ignore[attr-defined]
    return {
        "8-bit unsigned integer": "uint8",
        "8-bit signed integer": "int8",
        "16-bit unsigned integer": "uint16",
        "16-bit signed integer": "int16",
        "32-bit unsigned integer": "uint32",
        "32-bit signed integer": "int32",
        "32-bit float": "float32",
        "64-bit float": "float64",
    }.get(name, name)


def _itk_message(exc: BaseException) -> str:
    """The informative part of an ITK exception: its last line, without the source location, the
    ``[nrrd]``/``itk::ERROR: Class(0x...):`` prefixes (e.g. "_nrrdEncodingGzip_read: expected 3276800
    bytes but received 741679")."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    text = lines[-1] if lines else (str(exc).strip() or type(exc).__name__)
    text = re.sub(r"^\[\w+\]\s*", "", text)
    text = re.sub(r"^(s?itk::ERROR|ITK ERROR):\s*", "", text)
    text = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    return text[:160]
