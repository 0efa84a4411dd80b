"""Stain normalisation throughput: pathweak's per-slide estimate + batched apply against the reference
implementations normalising tile by tile, on the same real tiles in the same run. Prints JSON.

    python benchmarks/stain.py [--tiles 256] [--device cpu cuda] [--json-out benchmarks/results/stain.json]

Tiles: real LC25000 H&E tiles (224 px, ../shared/data/labeled) in memory, normalised toward a NCT-CRC-HE
tile. pathweak estimates the slide's stain once (``estimate_s``: 64 tiles) and then applies it per batch of 256
(numpy on the CPU; torch on each ``--device``). The references estimate every tile's stain as they normalise
it, which is how they are used: torchstain (numpy and torch) for Macenko and Reinhard, torch-staintools for
Vahadane (its dictionary learning per tile is slow on a CPU, so it is timed on ``--vahadane-tiles`` tiles) and
for Macenko (its batched path, on the same device). TIAToolbox's Vahadane is timed too when it imports.
Numbers on a shared machine are noisy; the ratios within one run are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("PATHWEAK_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
LC = SHARED / "labeled" / "lc25000_lung"
NCT = SHARED / "tiles" / "nct_crc_he_100k_samples"


def tiles(n: int) -> np.ndarray:
    from pathweak.stain.reference import read_image
    from pathweak.tiling.images import list_images

    files = list_images(LC)
    files = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
    return np.stack([read_image(f)[:224, :224] for f in files])


def rate(fn: Any, n: int, repeats: int = 3) -> float:
    """Tiles per second of ``fn()`` (which normalises ``n`` tiles), best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def ours(batch: np.ndarray, method: str, target_img: np.ndarray, devices: list[str]) -> dict[str, Any]:
    import torch

    from pathweak.stain import estimate
    from pathweak.stain.apply import StainTransform

    t0 = time.perf_counter()
    slide = estimate(batch[:64], method)
    out: dict[str, Any] = {"estimate_s": round(time.perf_counter() - t0, 3)}
    transform = StainTransform(slide, estimate(target_img, method))
    out["numpy_tiles_s"] = round(rate(lambda: [transform(batch[i : i + 256]) for i in range(0, len(batch), 256)], len(batch)), 1)
    for dev in devices:
        x = torch.from_numpy(batch).to(dev)

        def run(x: Any = x, dev: str = dev) -> None:
            for i in range(0, len(x), 256):
                transform(x[i : i + 256])
            if dev.startswith("cuda"):
                torch.cuda.synchronize()

        run()  # warm-up
        out[f"torch_{dev}_tiles_s"] = round(rate(run, len(batch)), 1)
    return out


def torchstain_rates(batch: np.ndarray, method: str, target_img: np.ndarray) -> dict[str, float]:
    import torch
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer
    from torchstain.torch.normalizers import TorchMacenkoNormalizer, TorchReinhardNormalizer

    out = {}
    if method == "macenko":
        n_np, n_t = NumpyMacenkoNormalizer(), TorchMacenkoNormalizer()
        n_np.fit(target_img)
        n_t.fit(torch.from_numpy(target_img).permute(2, 0, 1))
        out["torchstain_numpy_tiles_s"] = rate(lambda: [n_np.normalize(t, stains=False) for t in batch], len(batch), 1)
        xs = [torch.from_numpy(t).permute(2, 0, 1) for t in batch]
        out["torchstain_torch_cpu_tiles_s"] = rate(lambda: [n_t.normalize(x, stains=False) for x in xs], len(batch), 1)
    else:
        r_np, r_t = NumpyReinhardNormalizer(), TorchReinhardNormalizer()
        r_np.fit(target_img)
        r_t.fit(torch.from_numpy(target_img).permute(2, 0, 1))
        out["torchstain_numpy_tiles_s"] = rate(lambda: [r_np.normalize(t) for t in batch], len(batch), 1)
        xs = [torch.from_numpy(t).permute(2, 0, 1) for t in batch]
        out["torchstain_torch_cpu_tiles_s"] = rate(lambda: [r_t.normalize(x) for x in xs], len(batch), 1)
    return {k: round(v, 1) for k, v in out.items()}


def staintools_rates(batch: np.ndarray, method: str, target_img: np.ndarray, devices: list[str]) -> dict[str, float]:
    import torch
    from torch_staintools.constants import CONFIG
    from torch_staintools.normalizer import NormalizerBuilder

    CONFIG.ENABLE_COMPILE = False
    out = {}
    for dev in devices:
        norm = NormalizerBuilder.build(method, concentration_solver="ls", rng=0, device=torch.device(dev))
        norm = norm.to(dev)
        norm.fit(torch.from_numpy(target_img).permute(2, 0, 1)[None].float().div(255).to(dev))
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255).to(dev)
        step = 1 if method == "vahadane" else 64

        def run(x: Any = x, norm: Any = norm, dev: str = dev, step: int = step) -> None:
            for i in range(0, len(x), step):
                norm(x[i : i + step])
            if dev.startswith("cuda"):
                torch.cuda.synchronize()

        out[f"torch_staintools_{dev}_tiles_s"] = round(rate(run, len(batch), 1), 2)
    return out


def tiatoolbox_vahadane(batch: np.ndarray, target_img: np.ndarray) -> dict[str, float]:
    try:
        from tiatoolbox.tools.stainnorm import VahadaneNormalizer
    except Exception:  # noqa: BLE001 - optional: not installable beside pathweak's pins
        return {}
    norm = VahadaneNormalizer()
    norm.fit(target_img.copy())
    return {"tiatoolbox_numpy_tiles_s": round(rate(lambda: [norm.transform(t.copy()) for t in batch], len(batch), 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--vahadane-tiles", type=int, default=4)
    ap.add_argument("--device", nargs="+", default=None, help="torch devices (default: cpu, and cuda when there is one)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from pathweak.stain.reference import read_image

    devices = args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    batch = tiles(args.tiles)
    target = read_image(next(NCT.glob("NORM-*.tif")))
    result: dict[str, Any] = {
        "tiles": len(batch),
        "tile_px": 224,
        "devices": devices,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared; absolute rates are noisy)",
        "torch_threads": torch.get_num_threads(),
    }
    for method in ("macenko", "reinhard", "vahadane"):
        row = {"pathweak": ours(batch, method, target, devices)}
        if method != "vahadane":
            row["reference"] = torchstain_rates(batch, method, target)
        few = batch[: args.vahadane_tiles] if method == "vahadane" else batch
        if method != "reinhard":
            row["reference"] = {**row.get("reference", {}), **staintools_rates(few, method, target, devices)}
        if method == "vahadane":
            row["reference"].update(tiatoolbox_vahadane(few, target))
        best_ref = max(row["reference"].values())
        row["speedup_numpy_vs_best_reference"] = round(row["pathweak"]["numpy_tiles_s"] / best_ref, 1)
        result[method] = row
        print(method, json.dumps(row), flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
