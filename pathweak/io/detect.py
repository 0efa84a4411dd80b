"""Is this path a 3D medical volume? Decided from the file's first bytes, then its name.

Cheap enough to run on every input (a few hundred bytes read; SimpleITK only for DICOM files, to tell
a CT/MR slice from a DICOM whole-slide image).
"""

from __future__ import annotations

import gzip
from pathlib import Path

# DICOM VL Whole Slide Microscopy Image Storage: a slide, read by OpenSlide, not a volume
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"

VOLUME_SUFFIXES = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}


def volume_suffix(path: str | Path) -> str | None:
    """The volume extension of a file name (``.nii.gz`` counts as one), or None."""
    name = Path(path).name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def volume_id(path: str | Path) -> str:
    """The file name without its volume extension (``brain.nii.gz`` -> ``brain``)."""
    path = Path(path)
    suffix = volume_suffix(path) or (path.suffix if path.is_file() else "")
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def volume_format(path: str | Path) -> str | None:
    """``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"dicom"`` (one file), ``"dicom-series"`` (a folder) or
    None when ``path`` is not a volume (e.g. a whole-slide image, or a DICOM-WSI file or folder).

    The content decides first; a file whose content is unrecognised but whose name ends in a volume
    extension still counts as that format, so that reading it gives a clear error about the file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        dicoms = [p for p in files if _sniff(p) == "dicom"]
        return "dicom-series" if dicoms and _dicom_is_volume(dicoms[0]) else None
    if not path.is_file():
        return VOLUME_SUFFIXES.get(volume_suffix(path) or "")
    kind = _sniff(path)
    if kind == "dicom":
        return "dicom" if _dicom_is_volume(path) else None
    if kind is not None:
        return kind
    return VOLUME_SUFFIXES.get(volume_suffix(path) or "")


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(560)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b":  # gzip: look inside for a NIfTI header
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(560)
        except (OSError, EOFError):
            return None
    if head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0"):
        return "nifti"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head[128:132] == b"DICM":
        return "dicom"
    text = head[:560].decode("latin-1")
    if "NDims" in text and ("ObjectType" in text or "ElementType" in text):
        return "metaimage"
    return None


def _dicom_is_volume(path: Path) -> bool:
    """True for a DICOM image that is not a whole-slide microscopy image (CT, MR, PET slices...)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        sop = reader.GetMetaData("0008|0016").strip().rstrip("\0") if reader.HasMetaDataKey("0008|0016") else ""
    except RuntimeError:
        return False
    return sop != WSI_SOP_CLASS
