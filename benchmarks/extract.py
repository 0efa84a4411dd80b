"""Feature-extraction throughput against the model's pure forward throughput on the same tiles, in the
same run: does decoding (in loader workers) keep the model fed? Prints JSON.

    python benchmarks/extract.py [--tiles 2048] [--encoder timm:vit_tiny_patch16_224 | PRESET] [--device auto]
                                 [--decode cpu gpu]

``--encoder`` takes any preset (``uni2-h``, ``virchow2``, ``h-optimus-0``, ...; see ``pathweak encoders
list``) as well as a family name; ``--weights random`` (the default) measures the architecture with
random weights, so no download is needed. ``--json-out FILE`` also writes the result there.

Tiles: real LC25000 H&E tiles from ../shared/data/labeled (224 px) in a TileStore, or the generated
sample cohort tiled when ../shared is absent. "forward" embeds the same tiles already decoded in memory
(uint8 → normalise → model, the encoder's own ``embed``); "extract" is ``extract_features`` end to end
(read shards, decode JPEG in a worker, model, write the FeatureStore). On CUDA the model runs in bf16.
``--decode cpu gpu`` times extraction with each decode path in the same run (gpu: nvJPEG on the device,
features/decode.py); ``by_decode`` holds each one's throughput and ratio to the pure forward.

``--compare DIR`` times the code checked out at DIR (e.g. ``git worktree add /tmp/before <commit>``) in turn
with this checkout's: whole runs of this script, one repeat each, alternating (after, before, after, ...),
each against its own forward; ``compare`` holds both sides' runs, their medians, the after/before ratio and
whether the two codes wrote the same features (a hash of the FeatureStore's array: the random weights are
seeded, so the same code path gives the same bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # its sibling modules, also when loaded from a file path
from _emit import emit  # noqa: E402

LC = Path(os.environ.get("PATHWEAK_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "labeled" / "lc25000_lung"
WORK = HERE / "_work" / "extract"


def tile_files(n: int, folder: Path = LC) -> list[Path]:
    """``n`` real tile images from ``folder``, spread over it; when it holds fewer, they repeat in turn (the
    work per tile is the same, so the benchmark still times ``n`` tiles: a copy of the data with fewer
    images, such as the GPU machine's, does not silently shrink the run)."""
    from pathweak.tiling.images import list_images

    files = list_images(folder)
    if len(files) >= n:
        return [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
    return [files[i % len(files)] for i in range(n)]


def tile_store(n: int) -> Path:
    from pathweak.tiling.images import images_to_store

    if LC.exists():
        files = tile_files(n)
        return images_to_store(files, WORK / "tiles" / f"lc25000_{len(files)}.zarr", 224, progress=False).path
    from pathweak.synthetic import make_sample_cohort
    from pathweak.tiling import tile_slides

    slides = make_sample_cohort(WORK / "cohort")
    results = tile_slides([s.path for s in slides], WORK, progress=False)
    return Path(max(results, key=lambda r: r.n_tiles).store)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=2048)
    ap.add_argument("--encoder", default="timm:vit_tiny_patch16_224")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode", nargs="+", default=["auto"], choices=["auto", "cpu", "gpu"],
                    help="decode paths to time (each in the same run)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default benchmarks/_work/extract)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON result to this file")
    ap.add_argument("--compare", metavar="DIR", help="also run the code at DIR (before a change), alternating")
    args = ap.parse_args()
    if args.compare:
        emit(compare(args), args.json_out)
        return
    global WORK
    WORK = args.work or WORK

    import torch

    from pathweak.devices import parse_device
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.features.extract import _embed
    from pathweak.tiling import TileStore

    store_path = tile_store(args.tiles)
    dev = parse_device(args.device)
    enc = create_encoder(args.encoder, args.weights).to(dev).eval()
    with TileStore.open(store_path) as store:
        n = len(store)
        decoded = torch.from_numpy(store.read_tiles(np.arange(n)))
    loader_batch = 256

    def forward_once() -> float:
        t0 = time.perf_counter()
        for i in range(0, n, loader_batch):
            _embed(enc, decoded[i : i + loader_batch], dev, args.batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    written: list[str] = []

    def extract_once(decode: str) -> float:
        shutil.rmtree(WORK / "out", ignore_errors=True)
        t0 = time.perf_counter()
        (res,) = extract_features([store_path], enc, WORK / "out", batch_size=args.batch_size, device=str(dev),
                                  num_workers=args.workers, progress=False, decode=decode)
        if res.status != "extracted":
            raise RuntimeError(res.error)
        written[:] = [res.store]
        return time.perf_counter() - t0

    forward_once()  # warm-up (allocator, CUDA kernels, first-call overheads)
    runs = []
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        runs.append((forward_once(), *(extract_once(d) for d in args.decode)))
    fwd = float(np.median([r[0] for r in runs]))
    ext = float(np.median([r[1] for r in runs]))
    by_decode = {}
    for k, d in enumerate(args.decode):
        t = float(np.median([r[1 + k] for r in runs]))
        by_decode[d] = {"extract_tiles_per_s": round(n / t, 1), "ratio": round(fwd / t, 3)}
    distinct = len(set(TileStore.open(store_path).attrs.get("images") or [])) or None
    result = {
        "tiles": n, "tiles_asked": args.tiles, "distinct_images": distinct, "tile_px": 224, "encoder": enc.encoder_id, "embed_dim": enc.embed_dim, "device": str(dev),
        "model_input": enc.info.img_size,
        "precision": enc.info.precision if dev.type == "cuda" else "fp32", "loader_workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "forward_tiles_per_s": round(n / fwd, 1), "extract_tiles_per_s": round(n / ext, 1),
        "ratio": round(fwd / ext, 3), "runs_seconds": [[round(x, 2) for x in r] for r in runs],
        "decode": args.decode, "by_decode": by_decode,
        "target": 0.9 if dev.type == "cuda" else 0.8,
    }
    result["met"] = result["ratio"] >= result["target"]
    for entry in by_decode.values():
        entry["met"] = entry["ratio"] >= result["target"]
    if "cpu" in by_decode and "gpu" in by_decode:  # device decode must beat CPU decode
        result["gpu_over_cpu_decode"] = round(by_decode["gpu"]["extract_tiles_per_s"] / by_decode["cpu"]["extract_tiles_per_s"], 3)
    result["features_sha256"] = features_digest(written[0])
    shutil.rmtree(WORK / "out", ignore_errors=True)
    emit(result, args.json_out)


def features_digest(store: str) -> str:
    """A hash of a FeatureStore's feature array (its dtype, shape and bytes)."""
    import hashlib

    from pathweak.features import FeatureStore

    features = np.ascontiguousarray(FeatureStore.open(store).features[:])
    return hashlib.sha256(f"{features.dtype}{features.shape}".encode() + features.tobytes()).hexdigest()


def compare(args: argparse.Namespace) -> dict:
    """Whole runs of this script with this checkout's code and the code at ``args.compare``, alternating."""
    import subprocess

    child = ["--tiles", str(args.tiles), "--encoder", args.encoder, "--weights", args.weights, "--device", args.device,
             "--workers", str(args.workers), "--decode", *args.decode, "--repeats", "1"]
    child += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    child += ["--work", str(args.work)] if args.work else []
    runs: dict[str, list[dict]] = {"after": [], "before": []}
    for _ in range(args.repeats):
        for side, code in (("after", str(HERE.parent)), ("before", args.compare)):
            cmd = [sys.executable, str(Path(__file__).resolve()), *child]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env={**os.environ, "PYTHONPATH": code})
            if proc.returncode:
                raise RuntimeError(f"{side}: {proc.stderr[-2000:]}")
            runs[side].append(json.loads(proc.stdout))

    def median(side: str, key: str) -> float:
        return float(np.median([r[key] for r in runs[side]]))

    summary = {side: {"extract_tiles_per_s": median(side, "extract_tiles_per_s"),
                      "forward_tiles_per_s": median(side, "forward_tiles_per_s"), "ratio": median(side, "ratio"),
                      "runs_extract_tiles_per_s": [r["extract_tiles_per_s"] for r in runs[side]]}
               for side in runs}
    digests = {r["features_sha256"] for side in runs for r in runs[side]}
    commits = {f"{side}_commit": subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True,
                                                 text=True).stdout.strip() or code
               for side, code in (("after", str(HERE.parent)), ("before", args.compare))}
    return {"compare": {**commits, **summary,
                        "after_over_before_extract": round(summary["after"]["extract_tiles_per_s"]
                                                           / summary["before"]["extract_tiles_per_s"], 3),
                        "after_over_before_ratio_to_forward": round(summary["after"]["ratio"]
                                                                    / summary["before"]["ratio"], 3),
                        "same_features": len(digests) == 1},
            "runs": runs, "load_average_end": os.getloadavg()}


if __name__ == "__main__":
    main()
