"""The files of the review loop (docs/review.md): which correction files a path names, which slide each
belongs to (by file name), their content hash (the cohort's train key), and the measurement by which a
review export's detection remembers the class pathweak gave it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SUFFIXES = (".geojson", ".json", ".csv")  # QuPath GeoJSON exports, `pathweak ground-truth` CSVs
EXPORTED_CLASS = "pathweak class"  # measurement name prefix; the class list follows as JSON
SLIDE_SUFFIXES = re.compile(r"\.(svs|tiff?|ndpi|mrxs|scn|vms|vmu|bif|svslide|dcm|czi|qptiff|ome\.tiff?)$", re.I)


def exported_class_key(classes: list[str]) -> str:
    """The measurement name holding a tile's exported class index, with the class list in it (so the
    index reads back without any other file): ``pathweak class ["normal", "tumour"]``."""
    return f"{EXPORTED_CLASS} {json.dumps(list(classes))}"


def exported_class(measurements: dict[str, float]) -> str | None:
    """The class a review export gave this detection (from :func:`exported_class_key`'s measurement), or
    None when the detection has no such measurement."""
    for key, value in measurements.items():
        if key.startswith(EXPORTED_CLASS + " ["):
            try:
                names = json.loads(key[len(EXPORTED_CLASS) + 1 :])
                return str(names[int(value)])
            except (ValueError, IndexError, TypeError):
                return None
    return None


def correction_files(path: str | Path) -> tuple[list[Path], list[Path]]:
    """The correction files ``path`` names (a file, or a folder's ``.geojson``, ``.json`` and ``.csv``
    files, not its subfolders), and the other files in that folder (reported, not read)."""
    path = Path(path)
    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise ConfigError(
            "instance labels not found",
            path=path,
            fix="pass a QuPath GeoJSON export, a folder of them (one per slide) or a `pathweak ground-truth` CSV",
        )
    files: list[Path] = []
    other: list[Path] = []
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (files if p.suffix.lower() in SUFFIXES else other).append(p)
    if not files:
        raise ConfigError(
            f"no .geojson, .json or .csv file in the folder{f' (found {other[0].name} ...)' if other else ''}",
            path=path,
            fix="export each slide's objects from QuPath as GeoJSON into it (uncompressed), or pass one file",
        )
    return files, other


def corrections_hash(path: str | Path) -> str:
    """SHA-256 over the correction files' names and contents: equal when nothing changed, so a cohort rerun
    with the same corrections trains nothing again."""
    files, _ = correction_files(path)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slide_of(path: Path, slide_ids: list[str] | set[str]) -> str | None:
    """The slide a correction file belongs to, by its name: the name without ``.geojson`` / ``.json`` /
    ``.csv`` (and a slide file's extension, as QuPath's default export names keep none but users may add
    one) equal to a slide id; else the longest slide id the name starts with, followed by one of
    ``. _ -`` or a space (``slide_01-corrections.geojson``). None when no slide matches."""
    ids = set(slide_ids)
    stem = path.name[: -len(path.suffix)] if path.suffix.lower() in SUFFIXES else path.name
    for name in (stem, SLIDE_SUFFIXES.sub("", stem)):
        if name in ids:
            return name
    prefixed = [s for s in ids if len(stem) > len(s) and stem.startswith(s) and stem[len(s)] in "._- "]
    return max(prefixed, key=len) if prefixed else None


def describe(counts: dict[str, Any]) -> str:
    """``3 corrected detections, 1 annotation`` from a count dict (zeros left out)."""
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing"
