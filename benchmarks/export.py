"""QuPath GeoJSON export speed and memory: pathweak's streaming writer against building the same
FeatureCollection with the standard ``json`` library in one go (a list of dicts, then ``json.dumps``).

Tiles lie on a regular grid (448 level-0 px, as 224 px patches at 0.5 um/px of a 0.25 um/px scan) with
5 float32 measurements each. Every run is a fresh process; peak memory is that process's maximum RSS,
(VmHWM), reported with its RSS just before writing (after the scores exist), so the difference is what writing
cost. The outputs are checked to hold the same features. Prints JSON.

    python benchmarks/export.py [--tiles 200000] [--tiles 50000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
NAMES = ("attention", "tumor probability", "pseudo-label", "logit", "uncertainty")
TILE = 448


def _rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry over the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def make_scores(n: int):  # noqa: ANN201 - TileScores
    """TileScores for ``n`` tiles on a square-ish grid (no TileStore needed to write GeoJSON)."""
    from pathweak.heatmap.source import TileScores

    cols = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    coords = np.column_stack([(idx % cols) * TILE, (idx // cols) * TILE]).astype(np.int64)
    rng = np.random.default_rng(0)
    scores = {name: rng.random(n).astype(np.float32) for name in NAMES}
    scores["pseudo-label"] = rng.integers(0, 4, n).astype(np.float32)
    size = (int(cols * TILE), int(-(-n // cols) * TILE))
    return TileScores(coords, scores, (float(TILE), float(TILE)), size, (0.25, 0.25), "bench", store=None)  # type: ignore[arg-type]


def run_streaming(n: int, out: Path) -> dict:
    from pathweak.heatmap.geojson import write_geojson

    ts = make_scores(n)
    before = _current_rss_mb()
    t0 = time.perf_counter()
    write_geojson(ts, out, seed=0)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": _rss_mb()}


def run_json(n: int, out: Path) -> dict:
    from pathweak.heatmap.geojson import uuid4_strings

    ts = make_scores(n)
    before = _current_rss_mb()
    t0 = time.perf_counter()
    x0, y0, x1, y1 = (b.tolist() for b in ts.boxes())
    ids = uuid4_strings(n, np.random.default_rng(0))
    columns = {k: v.tolist() for k, v in ts.scores.items()}
    features = []
    for i in range(n):
        features.append({
            "type": "Feature",
            "id": ids[i],
            "geometry": {"type": "Polygon", "coordinates": [[[x0[i], y0[i]], [x1[i], y0[i]], [x1[i], y1[i]],
                                                             [x0[i], y1[i]], [x0[i], y0[i]]]]},
            "properties": {"objectType": "detection", "measurements": {k: c[i] for k, c in columns.items()}},
        })
    text = json.dumps({"type": "FeatureCollection", "features": features})
    out.write_text(text)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": _rss_mb()}


def child(mode: str, n: int, out: str) -> None:
    result = (run_streaming if mode == "streaming" else run_json)(n, Path(out))
    print(json.dumps(result))


def same_features(a: Path, b: Path) -> bool:
    """Both files hold the same tiles (geometry) with the same measurements (as float32)."""
    fa, fb = json.loads(a.read_text())["features"], json.loads(b.read_text())["features"]
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb, strict=False):
        ga, gb = x["geometry"]["coordinates"], y["geometry"]["coordinates"]
        if np.asarray(ga, float).tolist() != np.asarray(gb, float).tolist():
            return False
        ma, mb = x["properties"]["measurements"], y["properties"]["measurements"]
        if list(ma) != list(mb) or any(np.float32(ma[k]) != np.float32(mb[k]) for k in ma):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, action="append", help="tiles per run (repeatable; default 50000 and 200000)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    report: dict = {"measurements": len(NAMES), "runs": []}
    for n in args.tiles or [50000, 200000]:
        row: dict = {"tiles": n}
        for mode in ("streaming", "json"):
            out = WORK / f"export_{mode}_{n}.geojson"
            proc = subprocess.run([sys.executable, __file__, "--child", mode, str(n), str(out)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["file_mb"] = out.stat().st_size / 2**20
            r["write_memory_mb"] = r["peak_rss_mb"] - r["rss_before_mb"]
            row[mode] = {k: round(v, 3) for k, v in r.items()}
        row["same_features"] = same_features(WORK / f"export_streaming_{n}.geojson", WORK / f"export_json_{n}.geojson")
        row["speedup"] = round(row["json"]["seconds"] / row["streaming"]["seconds"], 2)
        report["runs"].append(row)
        for mode in ("streaming", "json"):
            (WORK / f"export_{mode}_{n}.geojson").unlink()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
