"""Finding a run's inputs: slide and volume files named by files, folders or glob patterns, and the
store id of each."""

from __future__ import annotations

import glob
from pathlib import Path

from ..errors import ConfigError, SlideNotFoundError

SLIDE_EXTENSIONS = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".qptiff",
}


def expand_slide_paths(inputs: list[str | Path]) -> list[Path]:
    """Slides and volumes named by files, folders (their slide and volume files, non-recursive) or glob
    patterns.

    A folder of several ``.dcm`` files is one DICOM input (a DICOM-WSI slide, or a CT/MR series that
    the tiler reads as one volume); a name that matches nothing is an error.
    """
    out: list[Path] = []
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise SlideNotFoundError("the pattern matches no file", path=text, fix="check the pattern")
            out.extend(m for m in matches if m.is_file() and is_input_file(m))
        elif Path(text).is_dir():
            out.extend(_folder_inputs(Path(text)))
        else:
            out.append(Path(text))
    return out


def _folder_inputs(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_input_file(p))
    dcm = [p for p in files if p.suffix.lower() == ".dcm"]
    out = [p for p in files if p.suffix.lower() != ".dcm"]
    if len(dcm) == 1:
        out.append(dcm[0])
    elif dcm:
        out.append(folder)
    elif not files and is_dicom_series(folder):  # CT/MR slices often have no file extension
        out.append(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sum(1 for f in sub.iterdir() if f.suffix.lower() == ".dcm") > 1:
            out.append(sub)
    if not out:
        raise SlideNotFoundError("the folder holds no slide files", path=folder, fix="check the folder")
    return out


def is_input_file(path: Path) -> bool:
    """A slide or volume file by its name (``.svs``, ``.nii.gz``, ``.nrrd``...)."""
    from .detect import volume_suffix

    return path.suffix.lower() in SLIDE_EXTENSIONS or volume_suffix(path) is not None


def is_dicom_series(folder: Path) -> bool:
    from .detect import volume_format

    return volume_format(folder) == "dicom-series"


def slide_ids(paths: list[Path]) -> list[str]:
    """The store id of each input: its file name without the extension (``.nii.gz``, ``.ome.tiff`` are
    one extension; a folder keeps its name). Two different files with one id are a ConfigError."""
    from .detect import volume_suffix

    ids = []
    for p in paths:
        name = p.name
        for ext in (".ome.tiff", ".ome.tif", *filter(None, [volume_suffix(p)])):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
                break
        else:
            name = p.stem if p.suffix and not p.is_dir() else p.name
        ids.append(name)
    seen: dict[str, Path] = {}
    for sid, p in zip(ids, paths, strict=False):
        if sid in seen and seen[sid] != p:
            raise ConfigError(
                f"two slides share the id {sid!r} ({seen[sid]} and {p})",
                fix="rename one, or tile them into different --out folders",
            )
        seen[sid] = p
    return ids
