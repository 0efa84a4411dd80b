"""A reviewer's corrections read back (docs/review.md): QuPath GeoJSON exports — detections of a review
export whose class was changed, annotations drawn by hand with a class — and `pathweak ground-truth` CSVs,
matched to slides by file name and to tiles by overlap, as
:class:`~pathweak.train.instance_labels.Corrections` for training.

A tile takes a class when at least ``overlap`` of its area lies inside that class's objects (the largest
share wins; an exact tie is a conflict, left out). Per-tile sources — reclassified detections and CSV
rows — win over annotations drawn across tiles. Everything not used is counted per file, and whatever
may be a mistake (a file of no slide, objects outside the slide or on no tile, detections without the
export's class measurement, unclassified annotations, conflicts) is a warning."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError
from ..io.qupath_geojson import coordinate_hint, read_qupath_geojson
from ..train.instance_labels import Corrections, SlideCorrections
from .regions import annotation_fractions
from .review_files import correction_files, describe, exported_class, file_sha256, slide_of
from .source import TileScores

DETECTIONS = ("detection", "tile", "cell")
REVIEW_CLASS = "Review"  # the class of the review queue's annotations (heatmap/review.py)
AREAS = ("Polygon", "MultiPolygon")


@dataclass
class _File:
    """One correction file's record: what it held, what was used, what was not."""

    path: Path
    slide: str | None
    kind: str
    used: Counter[str] = field(default_factory=Counter)
    not_used: Counter[str] = field(default_factory=Counter)

    def record(self) -> dict[str, Any]:
        return {
            "path": str(self.path.resolve()),
            "slide": self.slide,
            "kind": self.kind,
            "sha256": file_sha256(self.path),
            "used": dict(self.used),
            "not_used": dict(self.not_used),
        }


class _Parsed(NamedTuple):
    """One file's objects: per-tile ones (reclassified detections, CSV rows) and areas (annotations), each
    (shapely geometry, class name), and the classes named."""

    rec: _File
    per_tile: list[tuple[Any, str]]
    areas: list[tuple[Any, str]]
    classes: set[str]


def read_corrections(path: str | Path, features: Sequence[str | Path], overlap: float = 0.5) -> Corrections:
    """The corrections at ``path`` (a file or a folder of them) for the slides of ``features`` (FeatureStores,
    folders or globs, as ``pathweak train`` takes them), each tile needing ``overlap`` of its area inside a
    class's objects. Files are matched to slides by name (:func:`~pathweak.heatmap.review_files.slide_of`);
    each slide's tiles are read from the TileStore its FeatureStore names."""
    from ..store.features import FeatureStore, find_feature_stores
    from .review_files import corrections_hash

    if not 0 < overlap <= 1:
        raise ConfigError(f"the overlap must be in (0, 1], got {overlap}", fix="e.g. --instance-overlap 0.5")
    stores = {s.slide_id: s for s in (FeatureStore.open(p) for p in find_feature_stores(list(features)))}
    files, other = correction_files(path)
    warnings = [f"{p}: not a correction file (.geojson, .json or .csv; compressed exports are not read)" for p in other]
    records: list[_File] = []
    by_slide: dict[str, list[Path]] = {}
    for f in files:
        sid = slide_of(f, set(stores))
        if sid is None:
            examples = ", ".join(sorted(stores)[:3])
            if Path(path).is_file():
                raise ConfigError(
                    f"the file name matches no slide of the features (slides: {examples}{' ...' if len(stores) > 3 else ''})",
                    path=f,
                    fix="name the file after its slide, <slide_id>.geojson (QuPath's default export name)",
                )
            records.append(_File(f, None, _kind(f)))
            warnings.append(f"{f}: the file name matches no slide of the features ({examples} ...): not used")
            continue
        by_slide.setdefault(sid, []).append(f)
    if not by_slide:
        raise ConfigError(
            f"no file name matches a slide of the features (slides: {', '.join(sorted(stores)[:3])} ...)",
            path=path,
            fix="name each file after its slide, <slide_id>.geojson (QuPath's default export name)",
        )
    slides: dict[str, SlideCorrections] = {}
    for sid, paths in by_slide.items():
        ts, rows = _tiles(stores[sid])
        parsed = [_read_file(p, sid, ts, overlap) for p in paths]
        records += [p.rec for p in parsed]
        labels, slide_warnings = _assign(ts, parsed, overlap, sid)
        warnings += slide_warnings
        for rec in records:
            if rec.slide == sid and rec.not_used:
                warnings += _file_warnings(rec)
        hit = np.nonzero(labels >= 0)[0]
        names = sorted({c for p in parsed for c in p.classes})
        if len(hit):
            slides[sid] = SlideCorrections(rows[hit].astype(np.int64), [names[k] for k in labels[hit]])
    return Corrections(
        slides,
        [r.record() for r in records],
        corrections_hash(path),
        overlap,
        warnings,
        str(path),
    )


# -- one slide ------------------------------------------------------------------------------------------------


def _tiles(store: Any) -> tuple[TileScores, np.ndarray]:
    """The slide's tiles (geometry from its TileStore) and the FeatureStore row of each."""
    from ..store.results import ScoreTable
    from .source import open_tile_store, tile_scores

    record = store.attrs.get("tile_store") or {}
    where = Path(record.get("path", ""))
    if not record.get("path") or not where.exists():
        raise ConfigError(
            f"the TileStore of slide {store.slide_id} ({where}) is needed to lay corrections on its tiles, and is gone",
            path=store.path,
            fix="keep the tiles/ folder beside the features, or re-tile the slide",
        )
    tokens = store.attrs.get("tokens")
    extent = (float(tokens["extent"][0]), float(tokens["extent"][1])) if tokens else None
    coords = np.asarray(store.coords)
    ts = tile_scores(open_tile_store(where), ScoreTable(coords, {}, extent=extent))
    if extent is not None or np.array_equal(ts.coords, coords):
        return ts, np.arange(len(coords))
    index = {(int(x), int(y)): i for i, (x, y) in enumerate(coords)}
    return ts, np.array([index[(int(x), int(y))] for x, y in ts.coords], np.int64)


def _kind(path: Path) -> str:
    return "csv" if path.suffix.lower() == ".csv" else "geojson"


def _read_file(path: Path, sid: str, ts: TileScores, overlap: float) -> _Parsed:
    """(record, per-tile objects (geometry, class), area objects (geometry, class), classes) of one file;
    CSV rows come as the boxes of their tiles."""
    rec = _File(path, sid, _kind(path))
    if rec.kind == "csv":
        return _read_csv(rec, ts, overlap)
    per_tile: list[tuple[Any, str]] = []
    areas: list[tuple[Any, str]] = []
    for obj in read_qupath_geojson(path):
        if obj.object_type == "root":
            continue
        detection = obj.object_type in DETECTIONS
        if obj.geometry.geom_type not in AREAS or obj.geometry.is_empty:
            rec.not_used["objects that are not areas (points, lines)"] += 1
            continue
        if detection:
            before = exported_class(obj.measurements)
            if before is None:
                rec.not_used["detections without the review export's class measurement"] += 1
            elif obj.classification is None:
                rec.not_used["detections set to Unclassified"] += 1
            elif obj.classification == before:
                rec.not_used["detections left as exported"] += 1
            else:
                per_tile.append((obj.geometry, obj.classification))
        elif obj.classification is None:
            rec.not_used["annotations without a class"] += 1
        elif obj.classification == REVIEW_CLASS:
            rec.not_used["review queue annotations left as Review"] += 1
        else:
            areas.append((obj.geometry, obj.classification))
    _check_on_slide(path, ts, per_tile + areas)
    return _Parsed(rec, per_tile, areas, {c for _, c in per_tile + areas})


def _read_csv(rec: _File, ts: TileScores, overlap: float) -> _Parsed:
    """A `pathweak ground-truth` CSV (x, y, one overlap-fraction column per class) as per-tile boxes: a row's
    class is its column with the largest fraction, when that fraction is at least ``overlap``."""
    import shapely

    from ..store.results import read_scores_csv

    table = read_scores_csv(rec.path)
    at = {(int(x), int(y)): i for i, (x, y) in enumerate(ts.coords)}
    where = np.array([at.get((int(x), int(y)), -1) for x, y in table.coords], np.int64)
    if len(where) and (where < 0).all():
        raise ConfigError(
            f"none of the CSV's {len(where)} tiles (x, y) is a tile of slide {rec.slide}",
            path=rec.path,
            fix="write it with `pathweak ground-truth` on this slide's TileStore",
        )
    if (where < 0).any():
        rec.not_used["rows that are not tiles of the slide"] += int((where < 0).sum())
    names = list(table.scores)
    values = np.column_stack([table.scores[n] for n in names]) if names else np.zeros((len(where), 0))
    x0, y0, x1, y1 = ts.boxes()
    per_tile: list[tuple[Any, str]] = []
    for i, t in enumerate(where.tolist()):
        if t < 0:
            continue
        best = int(np.nanargmax(values[i])) if np.isfinite(values[i]).any() else -1
        if best < 0 or not values[i, best] >= overlap:
            rec.not_used[f"rows in no class by >= {overlap:g}"] += 1
            continue
        per_tile.append((shapely.box(x0[t], y0[t], x1[t], y1[t]), names[best]))
    return _Parsed(rec, per_tile, [], {c for _, c in per_tile})


def _check_on_slide(path: Path, ts: TileScores, objects: list[tuple[Any, str]]) -> None:
    """Objects that all miss the slide mean another slide's file or other coordinates: one error."""
    if not objects:
        return
    w, h = ts.slide_size
    bounds = np.array([g.bounds for g, _ in objects], np.float64)
    inside = (bounds[:, 0] < w) & (bounds[:, 2] > 0) & (bounds[:, 1] < h) & (bounds[:, 3] > 0)
    if inside.any():
        return
    x0, y0 = bounds[:, :2].min(0)
    x1, y1 = bounds[:, 2:].max(0)
    hint = coordinate_hint((x0, y0, x1, y1), (w, h))
    raise ConfigError(
        f"every object lies outside slide {ts.slide_id}'s level-0 extent of {w} x {h} px (bounds x {x0:.6g}..{x1:.6g}, "
        f"y {y0:.6g}..{y1:.6g}{'; ' + hint if hint else ''})",
        path=path,
        fix="export this slide's objects from QuPath (level-0 pixels), or rename the file after the slide it belongs to",
    )


def _assign(ts: TileScores, parsed: list[_Parsed], overlap: float, sid: str) -> tuple[np.ndarray, list[str]]:
    """Each tile's class index (into the sorted class names; -1: none) and the slide's warnings."""
    import shapely

    names = sorted({c for p in parsed for c in p.classes})
    boxes = shapely.box(*ts.boxes())
    tree = shapely.STRtree(boxes)
    w, h = ts.slide_size
    slide = shapely.box(0, 0, w, h)
    warnings: list[str] = []
    layers = []
    for layer in ("per_tile", "areas"):  # per-tile sources first: they win over annotations
        objects = [(g, c, p.rec) for p in parsed for g, c in getattr(p, layer)]
        labels, conflicts = _layer(ts, objects, names, overlap)
        if conflicts:
            warnings.append(
                f"slide {sid}: {conflicts} tile(s) covered equally by corrections of different classes: not used"
            )
        geoms = np.array([g for g, _, _ in objects], dtype=object)
        pairs = tree.query(geoms, predicate="intersects") if len(geoms) else np.zeros((2, 0), np.int64)
        for j, (g, c, rec) in enumerate(objects):  # an object is used when a tile under it took its class
            under = pairs[1][pairs[0] == j]
            if not g.intersects(slide):
                rec.not_used["objects outside the slide"] += 1
            elif (labels[under] == names.index(c)).any():
                rec.used[_USED[rec.kind if layer == "per_tile" else "annotation"]] += 1
            else:
                rec.not_used[f"objects covering no tile by >= {overlap:g} of its area"] += 1
        layers.append(labels)
    explicit, drawn = layers
    return np.where(explicit >= 0, explicit, drawn), warnings


_USED = {"csv": "rows", "geojson": "corrected detections", "annotation": "annotations"}


def _layer(
    ts: TileScores, objects: list[tuple[Any, str, _File]], names: list[str], overlap: float
) -> tuple[np.ndarray, int]:
    """Class index per tile from one layer's objects (-1: none), and the number of tied tiles."""
    n = len(ts.coords)
    if not objects:
        return np.full(n, -1, np.int64), 0
    fractions = np.zeros((n, len(names)), np.float32)
    for k, name in enumerate(names):
        geoms = [g for g, c, _ in objects if c == name]
        if geoms:
            fractions[:, k] = annotation_fractions(ts, geoms)
    top = fractions.max(1)
    best = fractions.argmax(1)
    tied = ((fractions == top[:, None]).sum(1) > 1) & (top >= overlap)
    labels = np.where((top >= overlap) & ~tied, best, -1)
    return labels.astype(np.int64), int(tied.sum())


def _file_warnings(rec: _File) -> list[str]:
    """The not-used counts of a file that may be a mistake, as one warning line (what is expected — detections
    left as exported, review annotations left as Review, CSV rows in no class — is recorded only)."""
    expected = ("detections left as exported", "review queue annotations left as Review", "rows in no class")
    worth = {k: n for k, n in rec.not_used.items() if n and not k.startswith(expected)}
    return [f"{rec.path}: not used: {describe(worth)}"] if worth else []
