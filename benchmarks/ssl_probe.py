"""Does pathweak's self-supervised pretraining learn useful features? Pretrain a small ViT (DINO and MAE)
on the unlabelled tiles of a labelled folder, then fit a logistic-regression probe on frozen features
and compare with the same ViT at random initialisation. Prints JSON.

    python benchmarks/ssl_probe.py [--data ../shared/data/labeled] [--minutes 8] [--methods dino mae]

The folder layout is that of ../shared/data/labeled: lc25000_lung/ (groups.csv: file, label,
source_group_id) and ebhi_seg/ (pairs.csv: image, mask, class, patient_id). Probes use 5-fold
cross-validation grouped by source photo (LC25000) or patient (EBHI), so no group is on both sides.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "labeled"


def load_tasks(data: Path) -> dict[str, dict]:
    """Image files, labels and groups of each task found in ``data``."""
    tasks = {}
    lc = data / "lc25000_lung" / "groups.csv"
    if lc.exists():
        rows = list(csv.DictReader(open(lc)))
        tasks["lc25000_3class"] = {
            "files": [lc.parent / r["file"] for r in rows], "labels": [r["label"] for r in rows],
            "groups": [f"{r['label']}-{r['source_group_id']}" for r in rows], "grouped_by": "source photo",
        }
    eb = data / "ebhi_seg" / "pairs.csv"
    if eb.exists():
        rows = list(csv.DictReader(open(eb)))
        tasks["ebhi_3class"] = {
            "files": [eb.parent / r["image"] for r in rows], "labels": [r["class"] for r in rows],
            "groups": [r["patient_id"] for r in rows], "grouped_by": "patient",
        }
    if not tasks:
        raise SystemExit(f"no lc25000_lung/groups.csv or ebhi_seg/pairs.csv under {data}")
    return tasks


def build_stores(tasks: dict[str, dict], work: Path) -> dict[str, Path]:
    from pathweak.tiling.images import images_to_store

    stores = {}
    for name, task in tasks.items():
        stores[name] = images_to_store(task["files"], work / "tiles" / f"{name}.zarr", 224, progress=False).path
    return stores


def embed_store(encoder, store: Path, size: int) -> np.ndarray:
    """Frozen features of every tile, resized to the encoder's input size."""
    import torch

    from pathweak.tiling import TileStore

    torch.set_grad_enabled(False)
    out = []
    with TileStore.open(store) as s:
        for start in range(0, len(s), 256):
            tiles = torch.from_numpy(s.read_tiles(slice(start, min(len(s), start + 256))))
            out.append(encoder.embed(tiles).numpy())
    return np.concatenate(out)


def probe(features: np.ndarray, labels: list[str], groups: list[str], seed: int = 0) -> dict:
    """Balanced accuracy of a logistic regression in 5-fold cross-validation grouped by ``groups``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    scores = []
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(features, y, groups):
        assert not set(np.asarray(groups)[train]) & set(np.asarray(groups)[test])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))
        clf.fit(features[train], y[train])
        scores.append(balanced_accuracy_score(y[test], clf.predict(features[test])))
    return {"balanced_accuracy": round(float(np.mean(scores)), 4), "std": round(float(np.std(scores)), 4),
            "folds": [round(float(s), 4) for s in scores]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "ssl_probe")
    ap.add_argument("--minutes", type=float, default=10.0, help="pretraining budget per method")
    ap.add_argument("--methods", nargs="+", default=["dino", "mae"])
    ap.add_argument("--img-size", type=int, default=112)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--epoch-samples", type=int, default=2048, help="tiles per epoch (one RankMe point per epoch)")
    args = ap.parse_args()

    from pathweak.encoders import create_encoder
    from pathweak.ssl import SSLConfig, pretrain

    t0 = time.perf_counter()
    tasks = load_tasks(args.data)
    stores = build_stores(tasks, args.work)
    result: dict = {"data": str(args.data), "tiles": {k: len(v["files"]) for k, v in tasks.items()},
                    "img_size": args.img_size, "depth": args.depth, "budget_minutes_per_method": args.minutes,
                    "store_seconds": round(time.perf_counter() - t0, 1), "probe": {}, "pretraining": {}}
    encoders: dict = {}
    # per-method settings that learned fastest on 2 CPU cores (see docs/benchmarks.md)
    tuned = {"mae": {"mask_ratio": 0.75, "lr": 1.5e-3, "batch_size": 64}, "dino": {}}
    for method in args.methods:
        cfg = SSLConfig.tiny(method, depth=args.depth, img_size=args.img_size, max_epochs=1000,
                             max_minutes=args.minutes, samples_per_epoch=args.epoch_samples,
                             local_size=48 if args.img_size <= 128 else 96, **tuned.get(method, {}))
        out = args.work / f"pretrain_{method}"
        res = pretrain(list(stores.values()), out, cfg, resume=False, progress=False)
        ranks = [r["rankme"] for r in res.rankme]
        result["pretraining"][method] = {
            "steps": res.steps, "epochs": res.epochs, "seconds": round(res.seconds, 1),
            "rankme": [round(r, 2) for r in ranks],
            "rankme_rose": bool(len(ranks) >= 2 and max(ranks[1:]) > ranks[0]),
            "loss_first_last": [round(float(np.mean(res.losses[:10])), 4), round(float(np.mean(res.losses[-10:])), 4)]
            if res.losses else None,
        }
        encoders[method] = create_encoder(f"pathweak:{out}")
        result["pretraining"][method]["config"] = {k: v for k, v in vars(cfg).items() if k in (
            "mask_ratio", "lr", "batch_size", "img_size", "depth", "out_dim", "local_crops")}
    # the same ViT at random initialisation, built exactly as each trained encoder is (pooling included)
    for method in args.methods:
        kwargs = json.loads((args.work / f"pretrain_{method}" / "encoder.json").read_text())["timm_kwargs"]
        encoders[f"random_init_{method}"] = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", **kwargs)
    for name, task in tasks.items():
        result["probe"][name] = {"grouped_by": task["grouped_by"]}
        for enc_name, enc in encoders.items():
            feats = embed_store(enc, stores[name], args.img_size)
            result["probe"][name][enc_name] = probe(feats, task["labels"], task["groups"])
        for method in args.methods:
            base = result["probe"][name][f"random_init_{method}"]["balanced_accuracy"]
            gain = result["probe"][name][method]["balanced_accuracy"] - base
            result["probe"][name][f"{method}_gain_points"] = round(100 * gain, 1)
    result["targets"] = {
        f"{m}_{t}_gain>=10": result["probe"][t][f"{m}_gain_points"] >= 10 for m in args.methods for t in tasks
    } | {f"{m}_rankme_rose": result["pretraining"][m]["rankme_rose"] for m in args.methods}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
