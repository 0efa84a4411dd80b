"""One ViT for 2D and 3D (Uni4Eye's unified patch embedding) against a 2D-only MAE and a 3D-only MAE (mae3d) at
equal CPU minutes: does pretraining one transformer on H&E tiles and MRI patches together cost either probe?
Prints JSON (and writes it to --out).

    python benchmarks/unified_mae.py [--cpu-minutes 4] [--out benchmarks/results/unified_mae.json]

Arms, all the same 4-block ViT-Tiny (2D: 64 px views of 16 px patches; 3D: 16^3-voxel cubes of 4^3 tokens), MAE
with 75 % masking, batch 64, ``select=last``, one torch thread, loader work in the training process
(``num_workers=0``):

- ``mae_2d``: ``pathweak pretrain --method mae`` on the 2D TileStores (EBHI and GlaS, as benchmarks/ssl_probe.py);
- ``mae3d``: ``--method mae3d`` on the 3D patch stores of the shared volumes (as benchmarks/ssl_probe_3d.py);
- ``unified``: ``--method mae`` on both kinds at once (one ViT; ``--volume-share`` of each epoch's batches 3D);
- ``random_init``: the unified architecture at random initialisation (probe reference, no training).

Budget: every arm stops when the CPU time of its training process reaches ``--cpu-minutes`` (SSLConfig
``max_cpu_minutes``; CPU time, not wall time, so the other jobs on a shared machine do not skew the comparison;
the arms run one after another). ``--unified-cpu-minutes`` gives the unified arm another budget (e.g. the two
specialists' sum). Probes (frozen features, logistic regression): the 2D probes of benchmarks/ssl_probe.py
(EBHI 3 classes and GlaS 2 classes, 5-fold grouped by patient, 5 repeats) and the 3D probe of
benchmarks/ssl_probe_3d.py (tumour vs no tumour patches of the labelled brain MRI, folds grouped by region).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ssl_probe import DEFAULT_DATA, build_stores, embed_store, load_tasks, probe  # noqa: E402
from ssl_probe_3d import DEFAULT_VOLUMES, tile_volumes  # noqa: E402
from ssl_probe_3d import embed as embed_patches  # noqa: E402
from ssl_probe_3d import probe as probe_3d  # noqa: E402


def config(method: str, args: argparse.Namespace, minutes: float, **extra):
    from pathweak.ssl import SSLConfig

    common = dict(depth=args.depth, batch_size=args.batch_size, lr=1.5e-3, mask_ratio=0.75, patch_3d=4,
                  max_epochs=100_000, samples_per_epoch=args.epoch_samples, max_cpu_minutes=minutes,
                  num_workers=0, select="last", rankme_samples=256, seed=0)
    size = {"mae3d": {"img_size": 16}}.get(method, {"img_size": args.img_size, "volume_img_size": 16})
    return SSLConfig.cpu(method, **(common | size | extra))


def kind_steps(out: Path) -> dict[str, int]:
    """Steps of each kind a unified run took (its CSV log's train_loss_2d / train_loss_3d rows)."""
    logs = sorted((out / "logs").glob("version_*/metrics.csv"))
    rows = list(csv.DictReader(open(logs[-1]))) if logs else []
    return {k: sum(1 for r in rows if r.get(f"train_loss_{k}")) for k in ("2d", "3d")}


def pretrain_arm(name: str, stores: list[Path], cfg, work: Path, reuse: bool) -> tuple[object, dict]:
    from pathweak.encoders import create_encoder
    from pathweak.ssl import pretrain

    out = work / f"pretrain_{name}"
    if not (reuse and (out / "encoder.json").exists()):
        wall, cpu = time.perf_counter(), time.process_time()
        pretrain(stores, out, cfg, resume=False, progress=False)
        measured = {"wall_seconds": round(time.perf_counter() - wall, 1), "process_cpu_seconds": round(time.process_time() - cpu, 1)}
        (out / "measured.json").write_text(json.dumps(measured))
    meta = json.loads((out / "encoder.json").read_text())
    t = meta["training"]
    info = {"steps": t["steps"], "epochs": t["epochs"], "cpu_seconds": t["schedule"].get("cpu_seconds"),
            "tiles": t["tiles"], "rankme": [round(r["rankme"], 2) for r in t["rankme"]],
            **json.loads((out / "measured.json").read_text())}
    if meta.get("input") == "rgb+volume":
        info["steps_by_kind"] = kind_steps(out)
    return create_encoder(f"pathweak:{out}"), info


def random_unified(folder: Path):
    """The unified architecture of the encoder in ``folder`` at random initialisation (seed 0)."""
    from dataclasses import replace

    import torch

    from pathweak.encoders import create_encoder
    from pathweak.encoders.base import Encoder
    from pathweak.encoders.unified import build_unified, unified_branch

    meta = json.loads((folder / "encoder.json").read_text())
    torch.manual_seed(0)
    net = build_unified(meta["timm_model"], meta["timm_kwargs"], unified_branch(meta["volume"]))
    info = replace(create_encoder(f"pathweak:{folder}").info, name="random_init", encoder_id="unified-random0")
    return Encoder(net, info).eval()


def finish(result: dict, out: Path, script: str, t0: float, load_start: list) -> None:
    """Add the load averages, the seconds taken and the command to ``result``; write it to ``out`` and print it."""
    result["load_average_1_5_15"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = f"python benchmarks/{script}.py " + " ".join(sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--volumes", type=Path, default=DEFAULT_VOLUMES)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "unified_mae")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "unified_mae.json")
    ap.add_argument("--cpu-minutes", type=float, default=4.0, help="CPU minutes of pretraining per arm")
    ap.add_argument("--unified-cpu-minutes", type=float, default=None, help="the unified arm's (default: --cpu-minutes)")
    ap.add_argument("--volume-share", type=float, default=0.3,
                    help="unified: share of batches that are 3D (0.3: about half the CPU, a 3D step costing ~2.3 2D steps)")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epoch-samples", type=int, default=2048)
    ap.add_argument("--max-negatives", type=int, default=1500, help="3D probe: no-tumour patches sampled")
    ap.add_argument("--tumour-fraction", type=float, default=0.1)
    ap.add_argument("--reuse", action="store_true", help="reuse encoders an earlier run pretrained in --work")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from pathweak.tiling import TileStore

    t0, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    tasks = load_tasks(args.data, args.work, ["ebhi", "glas"])
    flat = build_stores(tasks, args.work)
    cubes, brain = tile_volumes(args.volumes, args.work / "vol", 1.0, 16, 8)
    unified_minutes = args.unified_cpu_minutes or args.cpu_minutes
    arms = {
        "mae_2d": (list(flat.values()), config("mae", args, args.cpu_minutes)),
        "mae3d": (cubes, config("mae3d", args, args.cpu_minutes)),
        "unified": ([*flat.values(), *cubes], config("mae", args, unified_minutes, volume_share=args.volume_share)),
    }
    encoders, pretraining = {}, {}
    for name, (stores, cfg) in arms.items():
        encoders[name], pretraining[name] = pretrain_arm(name, stores, cfg, args.work, args.reuse)
        print(name, pretraining[name], flush=True)
    encoders["random_init"] = random_unified(args.work / "pretrain_unified")

    result: dict = {
        "data": str(args.data), "volumes": str(args.volumes),
        "tiles_2d": {k: len(v["files"]) for k, v in tasks.items()},
        "patches_3d": {Path(p).stem: len(TileStore.open(p)) for p in cubes},
        "budget": {"rule": "each arm stops when its training process has used this much CPU time (SSLConfig."
                           "max_cpu_minutes; num_workers=0 and one torch thread, so decoding and augmentation count "
                           "too); arms run one after another", "cpu_minutes": args.cpu_minutes,
                   "unified_cpu_minutes": unified_minutes},
        "model": {"arch": "vit_tiny", "depth": args.depth, "img_size_2d": args.img_size, "cube_3d": 16, "patch_3d": 4,
                  "batch_size": args.batch_size, "mask_ratio": 0.75, "volume_share": args.volume_share},
        "pretraining": pretraining, "probe_2d": {}, "probe_3d": {},
    }
    for name, task in tasks.items():
        row = result["probe_2d"][name] = {"grouped_by": task["grouped_by"]}
        for arm in ("mae_2d", "unified", "random_init"):
            feats = embed_store(encoders[arm], flat[name], 0)
            if "image_of_tile" in task:
                owner = task["image_of_tile"]
                feats = np.stack([feats[owner == i].mean(0) for i in range(len(task["labels"]))])
            p = probe(feats, task["labels"], task["groups"])
            row[arm] = {k: p[k] for k in ("balanced_accuracy", "std", "auc", "auc_std") if k in p}
        print(name, row, flush=True)
    with TileStore.open(brain) as s:
        frac, coords = s.label_fraction[:, 0], s.coords.astype(np.int64)
    tumour, clean = np.flatnonzero(frac >= args.tumour_fraction), np.flatnonzero(frac == 0)
    clean = np.random.default_rng(0).choice(clean, min(args.max_negatives, len(clean)), replace=False)
    use = np.sort(np.concatenate([tumour, clean]))
    y = (frac[use] >= args.tumour_fraction).astype(int)
    result["probe_3d"]["patches"] = {"tumour": int(y.sum()), "no_tumour": int((1 - y).sum())}
    for arm in ("mae3d", "unified", "random_init"):
        p = probe_3d(embed_patches(encoders[arm], brain, use), y, coords[use], 32, 16)
        result["probe_3d"][arm] = {k: p[k] for k in ("auc", "balanced_accuracy")}
    print("3d", result["probe_3d"], flush=True)
    p2, p3 = result["probe_2d"], result["probe_3d"]
    result["unified_minus_specialist"] = {
        "ebhi_balanced_accuracy": round(p2["ebhi_3class"]["unified"]["balanced_accuracy"] - p2["ebhi_3class"]["mae_2d"]["balanced_accuracy"], 4),
        "glas_auc": round(p2["glas_2class"]["unified"]["auc"] - p2["glas_2class"]["mae_2d"]["auc"], 4),
        "mri_auc": round(p3["unified"]["auc"] - p3["mae3d"]["auc"], 4),
    }
    finish(result, args.out, "unified_mae", t0, load_start)


if __name__ == "__main__":
    main()
