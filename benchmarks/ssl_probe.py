"""Does pathweak's self-supervised pretraining learn useful features? Pretrain a small ViT (DINO and MAE)
on the unlabelled tiles of a labelled folder, then fit a logistic-regression probe on frozen features
and compare with the same ViT at random initialisation. Prints JSON.

    python benchmarks/ssl_probe.py [--data ../shared/data/labeled] [--minutes 8] [--methods dino mae]
    python benchmarks/ssl_probe.py --tasks lc25000 ebhi --preset cpu --img-size 96 --minutes 8 \
        --set select=last --random-seeds 3 --out benchmarks/results/ssl_probe.json
    python benchmarks/ssl_probe.py --tasks glas ebhi --preset cpu --img-size 96 --minutes 20 \
        --set select=last --random-seeds 3 --out benchmarks/results/ssl_probe_glas.json

The folder layout is that of ../shared/data/labeled: lc25000_lung/ (groups.csv: file, label,
source_group_id), ebhi_seg/ (pairs.csv: image, mask, class, patient_id) and glas_colon/ (groups.csv:
file, label, source_group_id = patient). Probes use 5-fold cross-validation grouped by source photo
(LC25000) or patient (EBHI, GlaS), so no group is on both sides. GlaS images (775x522 at 0.62 um/px)
are cut into 224 px crops at native resolution (a grid covering the image, overlapping where the side
is not a multiple of 224); an image's feature is the mean of its crops' embeddings. Pretraining uses
the unlabelled tiles of the selected tasks (``--tasks``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from linear_probe import DEFAULT_DATA, build_stores, embed_store, load_tasks, probe  # noqa: E402


def _seed_summary(row: dict, method: str, n: int) -> None:
    """Mean and spread of the random-init probe over seeds 0..n-1 and the method's gain over that mean."""
    names = [f"random_init_{method}"] + [f"random_init_{method}_seed{s}" for s in range(1, n)]
    summary: dict = {"seeds": n}
    for metric in ("balanced_accuracy", "auc"):
        if metric not in row[method]:
            continue
        vals = np.array([row[k][metric] for k in names])
        summary[metric] = {
            "mean": round(float(vals.mean()), 4),
            "std": round(float(vals.std(ddof=1)), 4),
            "min": round(float(vals.min()), 4),
            "max": round(float(vals.max()), 4),
        }
    row[f"random_init_{method}_over_seeds"] = summary
    row[f"{method}_gain_points_vs_seed_mean"] = round(
        100 * (row[method]["balanced_accuracy"] - summary["balanced_accuracy"]["mean"]), 1
    )
    if "auc" in summary:
        row[f"{method}_gain_auc_vs_seed_mean"] = round(row[method]["auc"] - summary["auc"]["mean"], 4)


def _value(text: str):
    """A --set value: JSON (numbers, lists, true/false) or else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "ssl_probe")
    ap.add_argument("--minutes", type=float, default=10.0, help="pretraining budget per method")
    ap.add_argument("--methods", nargs="+", default=["dino", "mae"])
    ap.add_argument("--img-size", type=int, default=None, help="default: the preset's (tiny 112, cpu 64)")
    ap.add_argument("--depth", type=int, default=None, help="default: the preset's (tiny 6, cpu 4)")
    ap.add_argument("--epoch-samples", type=int, default=2048, help="tiles per epoch (one RankMe point per epoch)")
    ap.add_argument(
        "--tasks",
        nargs="+",
        choices=["lc25000", "ebhi", "glas"],
        default=None,
        help="labelled sets to pretrain on and probe (default: all found)",
    )
    ap.add_argument(
        "--preset",
        choices=["tiny", "cpu"],
        default="tiny",
        help="SSLConfig preset: tiny (6 blocks, 112 px) or cpu (4 blocks, 64 px, many cheap steps)",
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="SSLConfig overrides for every method, e.g. --set batch_size=256 mask_ratio=0.9",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument(
        "--random-seeds",
        type=int,
        default=1,
        help="random-init baselines at seeds 0..N-1 (probe only); gains are given against seed 0 and "
        "against the mean over the N seeds",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: fastest on a shared, oversubscribed CPU; see the result's 'threads')",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from pathweak.encoders import create_encoder
    from pathweak.ssl import SSLConfig, pretrain

    sets = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    tasks = load_tasks(args.data, args.work, args.tasks)
    stores = build_stores(tasks, args.work)
    result: dict = {
        "data": str(args.data),
        "tiles": {k: len(v["files"]) for k, v in tasks.items()},
        "images": {k: len(v["labels"]) for k, v in tasks.items()},
        "preset": args.preset,
        "set": sets,
        "budget_minutes_per_method": args.minutes,
        "threads": args.threads,
        "store_seconds": round(time.perf_counter() - t0, 1),
        "probe": {},
        "pretraining": {},
    }
    encoders: dict = {}
    shape = {k: v for k, v in (("depth", args.depth), ("img_size", args.img_size)) if v is not None}
    for method in args.methods:
        if args.preset == "cpu":
            cfg = SSLConfig.cpu(
                method,
                max_epochs=1000,
                max_minutes=args.minutes,
                samples_per_epoch=args.epoch_samples,
                **(shape | sets),
            )
        else:  # the tiny preset with the per-method settings that learned fastest in earlier runs
            tuned = {"mae": {"mask_ratio": 0.75, "lr": 1.5e-3, "batch_size": 64}, "dino": {}}
            size = args.img_size or 112
            cfg = SSLConfig.tiny(
                method,
                depth=args.depth or 6,
                img_size=size,
                max_epochs=1000,
                max_minutes=args.minutes,
                samples_per_epoch=args.epoch_samples,
                local_size=48 if size <= 128 else 96,
                **(tuned.get(method, {}) | sets),
            )
        out = args.work / f"pretrain_{method}"
        res = pretrain(list(stores.values()), out, cfg, resume=False, progress=False)
        ranks = [r["rankme"] for r in res.rankme]
        result["pretraining"][method] = {
            "steps": res.steps,
            "epochs": res.epochs,
            "seconds": round(res.seconds, 1),
            "rankme": [round(r, 2) for r in ranks],
            "rankme_rose": bool(len(ranks) >= 2 and max(ranks[1:]) > ranks[0]),
            "loss_first_last": [round(float(np.mean(res.losses[:10])), 4), round(float(np.mean(res.losses[-10:])), 4)]
            if res.losses
            else None,
        }
        encoders[method] = create_encoder(f"pathweak:{out}")
        result["pretraining"][method]["config"] = {
            k: v
            for k, v in vars(cfg).items()
            if k
            in (
                "mask_ratio",
                "lr",
                "batch_size",
                "img_size",
                "depth",
                "out_dim",
                "local_crops",
                "local_size",
                "ema_momentum",
                "warmup_steps",
                "select",
            )
        }
    # the same ViT at random initialisation, built exactly as each trained encoder is (pooling included)
    for method in args.methods:
        kwargs = json.loads((args.work / f"pretrain_{method}" / "encoder.json").read_text())["timm_kwargs"]
        encoders[f"random_init_{method}"] = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", **kwargs)
        for seed in range(1, args.random_seeds):
            encoders[f"random_init_{method}_seed{seed}"] = create_encoder(
                "timm:vit_tiny_patch16_224", weights=f"random:{seed}", **kwargs
            )
    for name, task in tasks.items():
        result["probe"][name] = {"grouped_by": task["grouped_by"]}
        for enc_name, enc in encoders.items():
            feats = embed_store(enc, stores[name], 0)
            if "image_of_tile" in task:  # an image's feature: the mean of its crops'
                owner = task["image_of_tile"]
                feats = np.stack([feats[owner == i].mean(0) for i in range(len(task["labels"]))])
            result["probe"][name][enc_name] = probe(feats, task["labels"], task["groups"])
        for method in args.methods:
            row = result["probe"][name]
            gain = row[method]["balanced_accuracy"] - row[f"random_init_{method}"]["balanced_accuracy"]
            row[f"{method}_gain_points"] = round(100 * gain, 1)
            if "auc" in row[method]:
                row[f"{method}_gain_auc"] = round(row[method]["auc"] - row[f"random_init_{method}"]["auc"], 4)
            if args.random_seeds > 1:
                _seed_summary(row, method, args.random_seeds)
    targets = {
        f"{m}_{t}_gain>=10": result["probe"][t][f"{m}_gain_points"] >= 10
        for m in args.methods
        for t in tasks
        if not t.startswith("glas")
    }
    targets |= {
        f"{m}_{t}_auc_gain>=0.10": result["probe"][t][f"{m}_gain_auc"] >= 0.10
        for m in args.methods
        for t in tasks
        if t.startswith("glas")
    }
    result["targets"] = targets | {f"{m}_rankme_rose": result["pretraining"][m]["rankme_rose"] for m in args.methods}
    result["load_average_1_5_15"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = "python benchmarks/ssl_probe.py " + " ".join(sys.argv[1:])
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
