"""A cohort's manifest CSV: one row per slide (path, slide_id, patient_id, label or time/event, split), and per
slide what tiling needs to know about it that the file may not say: its resolution (``mpp``) and its region
of interest (``roi``, a QuPath GeoJSON)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..config import parse_mpp
from ..errors import ConfigError

MANIFEST_COLUMNS = ("path", "patient_id", "label")
SURVIVAL_COLUMNS = ("time", "event")  # instead of label, for train: {task: survival}
COLUMNS_HELP = (
    "columns: path, slide_id (optional), patient_id, label (or time and event for survival), split (optional), "
    "mpp and roi (optional)"
)


@dataclass(frozen=True)
class Slide:
    """One manifest row. ``mpp``: the slide's level-0 microns per pixel where its file lacks or misstates it
    (or ``"estimate"``); ``roi``: a QuPath GeoJSON whose annotations replace tissue detection for it."""

    slide_id: str
    path: Path
    patient_id: str
    label: str
    split: str | None = None
    time: str | None = None  # survival: follow-up time and event (1 event, 0 censored), as the manifest has them
    event: str | None = None
    mpp: float | str | None = None
    roi: Path | None = None


def read_manifest(path: Path) -> list[Slide]:
    """Manifest rows (path, slide_id, patient_id, label, optional split; time and event instead of, or as
    well as, label for survival; optional mpp and roi); slide and ROI paths relative to the CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's byte-order mark is not a column name
            reader = csv.DictReader(fh)
            reader.fieldnames = [str(c).strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except FileNotFoundError:
        raise ConfigError("manifest not found", path=path, fix="check 'manifest:' in the cohort spec") from None
    if not rows:
        raise ConfigError("the manifest has no rows", path=path, fix="list one slide per row")
    survival = all(c in rows[0] for c in SURVIVAL_COLUMNS)
    missing = [c for c in MANIFEST_COLUMNS if c not in rows[0] and not (c == "label" and survival)]
    if missing:
        raise ConfigError(f"the manifest lacks column(s) {', '.join(missing)}", path=path, fix=COLUMNS_HELP)
    slides, seen, files = [], set(), dict[Path, int]()
    for i, row in enumerate(rows, start=2):
        slide_path = (path.parent / str(row["path"] or "").strip()).resolve()
        slide_id = (row.get("slide_id") or "").strip() or slide_path.stem
        if slide_id in seen:
            raise ConfigError(f"slide id {slide_id!r} appears twice (line {i})", path=path, fix="make slide ids unique")
        if slide_path in files:  # one file under two ids: tiled twice, and counted twice in training
            raise ConfigError(
                f"lines {files[slide_path]} and {i} name the same slide file {slide_path.name}",
                path=path,
                fix="list each slide file once",
            )
        seen.add(slide_id)
        files[slide_path] = i
        slides.append(
            Slide(
                slide_id,
                slide_path,
                str(row["patient_id"]).strip(),
                str(row.get("label") or "").strip(),
                (row.get("split") or "").strip() or None,
                (row.get("time") or "").strip() or None,
                (row.get("event") or "").strip() or None,
                _mpp(row.get("mpp"), path, i),
                _roi(row.get("roi"), path, i),
            )
        )
    return slides


def _mpp(text: str | None, manifest: Path, line: int) -> float | str | None:
    """A row's ``mpp``: empty (the slide's own), a positive number of microns per pixel, or ``estimate``."""
    try:
        return parse_mpp(text)
    except ValueError:
        raise ConfigError(
            f"line {line}: mpp {text!r} is not a positive number of microns per pixel or 'estimate'",
            path=manifest,
            fix="write e.g. 0.25 (40x), 0.5 (20x) or estimate, or leave it empty for the slide's own",
        ) from None


def _roi(text: str | None, manifest: Path, line: int) -> Path | None:
    """A row's ``roi``: a QuPath GeoJSON relative to the manifest, which must exist (checked before any work)."""
    text = (text or "").strip()
    if not text:
        return None
    roi = (manifest.parent / text).resolve()
    if not roi.is_file():
        raise ConfigError(
            f"line {line}: the ROI file {text} is not found",
            path=manifest,
            fix="give a QuPath GeoJSON path relative to the manifest, or leave roi empty to detect tissue",
        )
    return roi
