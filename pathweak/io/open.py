"""``open_slide``: one entry point that picks the reader backend for a file."""

from __future__ import annotations

from pathlib import Path

from .._registry import Registry
from ..errors import CorruptSlideError, PathweakError, SlideFormatError, SlideNotFoundError
from ..errors import reason as _short
from .base import Slide
from .openslide_backend import OpenSlideSlide
from .tiffslide_backend import TiffSlideSlide

BACKENDS: Registry[type[Slide]] = Registry("slide backend")
BACKENDS.register("openslide")(OpenSlideSlide)
BACKENDS.register("tiffslide")(TiffSlideSlide)

SUPPORTED = "Aperio SVS, generic or pyramidal TIFF, DICOM-WSI and the other formats OpenSlide or tiffslide read"


def open_slide(
    path: str | Path,
    backend: str = "auto",
    mpp: float | tuple[float, float] | None = None,
) -> Slide:
    """Open a whole-slide image.

    ``backend="auto"`` uses OpenSlide when it recognises the file and tiffslide otherwise (plain or
    non-OpenSlide TIFFs). A file OpenSlide recognises as a vendor format but cannot open is reported as
    damaged rather than handed to tiffslide, which would decode damaged tiles without complaint.
    ``mpp`` overrides the resolution recorded in the file (its source then reads ``"user"``).
    """
    path = Path(path)
    if not path.exists():
        raise SlideNotFoundError("file not found", path=path, fix="check the path and spelling")
    _refuse_volume(path)
    if path.is_dir():
        path = _dicom_file_in(path)
    if _is_truncated_tiff(path):
        raise CorruptSlideError(
            "the file is truncated: its TIFF directories or image data run past the end of the file",
            path=path,
            fix="the copy is incomplete; copy or download the slide again",
        )
    if backend != "auto":
        return _open_with(BACKENDS.get(backend), path, mpp)

    vendor = _openslide_vendor(path)
    if vendor is not None:
        try:
            return OpenSlideSlide(path, mpp)
        except PathweakError:
            raise
        except Exception as exc:
            if vendor != "generic-tiff":
                raise CorruptSlideError(
                    f"OpenSlide recognises a {vendor} slide but cannot read it ({_short(exc)})",
                    path=path,
                    fix="the file is damaged or incomplete; copy or export it again",
                ) from None
            # OpenSlide takes only some generic TIFFs (e.g. not 16-bit or multi-channel): let tiffslide try
    return _open_with(TiffSlideSlide, path, mpp)


def _refuse_volume(path: Path) -> None:
    """A 3D medical volume is not a slide: point to the volume reader instead of failing obscurely."""
    from .detect import volume_format

    fmt = volume_format(path)
    if fmt is not None:
        raise SlideFormatError(
            f"this is a 3D volume ({fmt}), not a whole-slide image",
            path=path,
            fix="open it with pathweak.open_volume; `pathweak info` and `pathweak tile` read volumes directly",
        )


def _open_with(cls: type[Slide], path: Path, mpp: float | tuple[float, float] | None) -> Slide:
    try:
        return cls(path, mpp)
    except PathweakError:
        raise
    except Exception as exc:
        raise SlideFormatError(
            f"not a whole-slide image {cls.backend} can read ({_short(exc)})",
            path=path,
            fix=f"check that this is a slide file; pathweak reads {SUPPORTED}",
        ) from None


def _openslide_vendor(path: Path) -> str | None:
    try:
        import openslide

        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None


def _dicom_file_in(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    dicoms = [p for p in files if p.suffix.lower() == ".dcm"] or files
    if not dicoms:
        raise SlideFormatError("the folder is empty", path=folder, fix="point to a slide file or a DICOM-WSI folder")
    return dicoms[0]


def _is_truncated_tiff(path: Path) -> bool:
    """True for a TIFF whose directory chain, or any page's strip/tile data, runs past the end of file.

    The directory chain is walked by hand (a truncated file often loses its directories, and tifffile
    then just reports no pages); pages that do parse have their data offsets checked too.
    """
    import logging
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None or len(head) < 8:
                return False
            magic = struct.unpack(order + "H", head[2:4])[0]
            if magic == 42:
                count_fmt, entry_size, off_fmt = "H", 12, "I"
                offset = struct.unpack(order + "I", head[4:8])[0]
            elif magic == 43 and len(head) >= 16:
                count_fmt, entry_size, off_fmt = "Q", 20, "Q"
                offset = struct.unpack(order + "Q", head[8:16])[0]
            else:
                return False
            seen = set()
            while offset and offset not in seen:
                seen.add(offset)
                count_size = struct.calcsize(count_fmt)
                if offset + count_size > size:
                    return True
                fh.seek(offset)
                count = struct.unpack(order + count_fmt, fh.read(count_size))[0]
                end = offset + count_size + count * entry_size + struct.calcsize(off_fmt)
                if end > size:
                    return True
                fh.seek(end - struct.calcsize(off_fmt))
                offset = struct.unpack(order + off_fmt, fh.read(struct.calcsize(off_fmt)))[0]
    except OSError:
        return False
    try:
        import tifffile

        logger = logging.getLogger("tifffile")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            with tifffile.TiffFile(path) as tif:
                for page in tif.pages:
                    if any(o + c > size for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)):
                        return True
        finally:
            logger.setLevel(level)
    except Exception:
        return False
    return False
