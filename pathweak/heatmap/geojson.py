"""Streaming QuPath GeoJSON: a FeatureCollection written feature chunk by feature chunk, never held as
one string. Tiles become ``detection`` features (UUID id, closed Polygon in level-0 pixels, every score
in ``properties.measurements``) that QuPath's Measurement Maps colour; thresholded regions become
``annotation`` features with a classification. See ../shared/data/qupath/QUPATH_GEOJSON_FORMAT.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from .._atomic import atomic_file
from ..progress import progress_bar
from .regions import Region, region_polygons
from .source import TileScores

CHUNK = 8192  # features formatted and written at a time


class FeatureCollectionWriter:
    """Writes ``{"type": "FeatureCollection", "features": [...]}`` feature chunk by feature chunk to a
    temporary file that replaces ``path`` on a clean exit and is removed on an error."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._stack = ExitStack()
        self._f: IO[str] | None = None
        self.count = 0

    def __enter__(self) -> FeatureCollectionWriter:
        self._f = self._stack.enter_context(atomic_file(self.path, "w", encoding="utf-8"))
        self._f.write('{"type":"FeatureCollection","features":[')
        return self

    def write(self, features: list[str]) -> None:
        """Append features, each one JSON object as a string (one per line)."""
        if not features:
            return
        assert self._f is not None, "use the writer as a context manager"
        self._f.write(("\n" if self.count == 0 else ",\n") + ",\n".join(features))
        self.count += len(features)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self._f is not None:
            self._f.write("\n]}\n")
        self._stack.__exit__(exc_type, exc, tb)


def write_geojson(
    ts: TileScores,
    path: str | Path,
    scores: list[str] | None = None,
    regions: list[Any] = (),  # type: ignore[assignment]
    *,
    seed: int | None = None,
    progress: bool = False,
) -> Path:
    """Write the tiles of ``ts`` as QuPath detections with the chosen ``scores`` (default: all) as
    measurements, and each :class:`~pathweak.heatmap.regions.Region` as classified annotations.
    ``seed`` makes the UUIDs reproducible; by default they are random (version 4)."""
    chosen = ts.pick(scores)
    rng = np.random.default_rng(seed) if seed is not None else None
    with FeatureCollectionWriter(path) as out, progress_bar(len(ts.coords), "GeoJSON", enabled=progress) as advance:
        for region in regions:
            out.write(region_features(ts, region, rng))
        for lines in tile_features(ts, chosen, rng):
            out.write(lines)
            advance(len(lines))
    return Path(path)


def tile_features(
    ts: TileScores,
    scores: dict[str, np.ndarray],
    rng: np.random.Generator | None = None,
    chunk: int = CHUNK,
    classes: tuple[np.ndarray, list[tuple[str, tuple[int, int, int]]]] | None = None,
) -> Iterator[list[str]]:
    """The tiles as detection Features (JSON strings), ``chunk`` at a time; ``classes``: each tile's class
    index (-1: unclassified) and the classes' (name, RGB colour), written as QuPath classifications."""
    names = "".join(f",{_template_key(n)}:%s" for n in scores)[1:]
    template = (
        '{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":'
        "[[[%s,%s],[%s,%s],[%s,%s],[%s,%s],[%s,%s]]]},"
        '"properties":{"objectType":"detection"' + ("%s" if classes else "") + ',"measurements":{' + names + "}}}"
    )
    values = list(scores.values())
    labels = None
    if classes is not None:  # one JSON fragment per class; index -1 (the last entry) writes none
        fragments = [
            ',"classification":' + json.dumps({"name": n, "color": list(c)}, separators=(",", ":"))
            for n, c in classes[1]
        ]
        labels = np.array([*fragments, ""], dtype=object)[np.asarray(classes[0], np.int64)]
    for start in range(0, len(ts.coords), chunk):
        s = slice(start, start + chunk)
        a, b, c, d = (number_strings(v) for v in ts.boxes(s))
        ids = uuid4_strings(len(a), rng)
        measures = [number_strings(v[s], float32=True) for v in values]
        extra = [labels[s].tolist()] if labels is not None else []
        yield [template % row for row in zip(ids, a, b, c, b, c, d, a, d, a, b, *extra, *measures, strict=False)]


def feature(
    geometry: Any,
    object_type: str,
    *,
    id: str,
    classification: tuple[str, tuple[int, int, int]] | None = None,
    name: str | None = None,
    measurements: dict[str, float] | None = None,
) -> str:
    """One QuPath Feature (a shapely geometry in level-0 pixels) as a JSON string."""
    from shapely.geometry import mapping

    props: dict[str, Any] = {"objectType": object_type}
    if name:
        props["name"] = name
    if classification is not None:
        props["classification"] = {"name": classification[0], "color": [int(v) for v in classification[1]]}
    if measurements:
        props["measurements"] = {k: _measurement(v) for k, v in measurements.items()}
    return json.dumps(
        {"type": "Feature", "id": id, "geometry": mapping(geometry), "properties": props},
        separators=(",", ":"),
        allow_nan=False,
    )


def uuid4_strings(n: int, rng: np.random.Generator | None = None) -> list[str]:
    """``n`` random version-4 UUIDs as strings (from ``rng`` when given, else the OS), made in bulk."""
    raw = rng.bytes(16 * n) if rng is not None else os.urandom(16 * n)
    b = np.frombuffer(raw, np.uint8).reshape(n, 16).copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    hexes = np.frombuffer(b.tobytes().hex().encode("ascii"), "S1").reshape(n, 32)
    dash = np.full((n, 1), b"-", "S1")
    parts = [hexes[:, :8], dash, hexes[:, 8:12], dash, hexes[:, 12:16], dash, hexes[:, 16:20], dash, hexes[:, 20:]]
    return np.concatenate(parts, axis=1).view("S36").ravel().astype("U36").tolist()


def number_strings(values: np.ndarray, float32: bool = False) -> list[str]:
    """JSON text of each value: integers plainly, other numbers shortest-exact (9 significant digits for
    float32, which read back as the same float32); NaN and infinities as QuPath writes them, strings."""
    values = np.asarray(values)
    if float32:
        return [_json_number(v, True) for v in values.tolist()]
    uniq, inverse = np.unique(values, return_inverse=True)  # tile coordinates repeat along the grid
    text = np.array([_json_number(v) for v in uniq.tolist()], dtype=object)
    return text[inverse.ravel()].tolist()


def _json_number(v: float, float32: bool = False) -> str:
    if math.isnan(v):
        return '"NaN"'
    if math.isinf(v):
        return '"Infinity"' if v > 0 else '"-Infinity"'
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return f"{v:.9g}" if float32 else repr(float(v))


def _measurement(v: float) -> float | str:
    """A measurement value for ``json.dumps``: a number, or QuPath's string for NaN and infinities."""
    v = float(v)
    return v if math.isfinite(v) else json.loads(_json_number(v))


def _template_key(name: str) -> str:
    return json.dumps(name).replace("%", "%%")


def region_features(ts: TileScores, region: Region, rng: np.random.Generator | None = None) -> list[str]:
    """The region's polygons as classified QuPath annotation Features (JSON strings), each with the
    number of its tiles and their mean score as measurements."""
    polygons, owners = region_polygons(ts, region)
    values = ts.scores[region.score]
    ids = uuid4_strings(len(polygons), rng)
    out = []
    for i, poly in enumerate(polygons):
        tiles = owners[owners[:, 0] == i, 1]
        measurements = {
            "Tiles": float(tiles.size),
            f"Mean {region.score}": float(np.mean(values[tiles])) if tiles.size else float("nan"),
        }
        out.append(
            feature(
                poly, "annotation", id=ids[i], classification=(region.name, region.color), measurements=measurements
            )
        )
    return out
