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
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(os.environ.get("PATHWEAK_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "labeled"


def native_crops(files: list[Path], work: Path, size: int = 224) -> tuple[list[Path], np.ndarray]:
    """``size`` px crops at native resolution covering each image (PNG files under ``work``), and the
    index of the image each crop comes from."""
    import cv2

    work.mkdir(parents=True, exist_ok=True)
    crops, owner = [], []
    for i, f in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        ys = np.linspace(0, h - size, max(1, int(np.ceil(h / size)))).round().astype(int)
        xs = np.linspace(0, w - size, max(1, int(np.ceil(w / size)))).round().astype(int)
        for y in ys:
            for x in xs:
                path = work / f"{i:04d}_{y}_{x}.png"
                if not path.exists():
                    cv2.imwrite(str(path), img[y : y + size, x : x + size])
                crops.append(path)
                owner.append(i)
    return crops, np.asarray(owner)


def load_tasks(data: Path, work: Path | None = None, only: list[str] | None = None) -> dict[str, dict]:
    """Image files, labels and groups of each task found in ``data`` (``only``: lc25000, ebhi, glas)."""
    tasks = {}
    glas = data / "glas_colon" / "groups.csv"
    if glas.exists() and (only is None or "glas" in only):
        rows = list(csv.DictReader(open(glas)))
        crops, owner = native_crops([glas.parent / r["file"] for r in rows], (work or Path(".")) / "glas_crops")
        tasks["glas_2class"] = {
            "files": crops,
            "image_of_tile": owner,
            "labels": [r["label"] for r in rows],
            "groups": [r["source_group_id"] for r in rows],
            "grouped_by": "patient",
        }
    lc = data / "lc25000_lung" / "groups.csv"
    if lc.exists() and (only is None or "lc25000" in only):
        rows = list(csv.DictReader(open(lc)))
        tasks["lc25000_3class"] = {
            "files": [lc.parent / r["file"] for r in rows],
            "labels": [r["label"] for r in rows],
            "groups": [f"{r['label']}-{r['source_group_id']}" for r in rows],
            "grouped_by": "source photo",
        }
    eb = data / "ebhi_seg" / "pairs.csv"
    if eb.exists() and (only is None or "ebhi" in only):
        rows = list(csv.DictReader(open(eb)))
        tasks["ebhi_3class"] = {
            "files": [eb.parent / r["image"] for r in rows],
            "labels": [r["class"] for r in rows],
            "groups": [r["patient_id"] for r in rows],
            "grouped_by": "patient",
        }
    if not tasks:
        raise SystemExit(f"no lc25000_lung/groups.csv, ebhi_seg/pairs.csv or glas_colon/groups.csv under {data}")
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


def probe(features: np.ndarray, labels: list[str], groups: list[str], seed: int = 0, repeats: int = 5,
          views: int = 1, mode: str = "sla") -> dict:
    """Balanced accuracy of a class-balanced logistic regression in 5-fold cross-validation grouped by
    ``groups``, repeated with ``repeats`` shuffles of the groups (seeds ``seed``...); for two classes also
    the AUC as the mean of the per-fold AUCs (folds holding one class only are skipped) and, for
    reference only, over the pooled out-of-fold scores (mean over repeats).

    The per-fold AUC is the metric: with few groups (GlaS: 15 patients, most holding one class) each
    fold's training class mix runs against its test fold's, so the folds' intercepts anti-correlate with
    their test composition and pooling their scores drags any encoder below chance (random-init ViTs:
    pooled 0.35-0.39, per fold 0.46-0.51; Gaussian noise features: 0.49 / 0.51). ``class_weight="balanced"``
    fits the metric (balanced accuracy) on imbalanced sets such as EBHI (557/179/55), instead of a probe
    that mostly predicts the majority class. Repeats damp the split-to-split noise of few groups.

    ``views`` > 1: ``features`` hold that many views of each image side by side (``extract --rotations``) and
    the probe trains on every view of the training images: ``mode="sla"`` on the joint (class, view) labels,
    scoring class c by the mean over views of the joint logit (c, view) on that view (self-supervised label
    augmentation); ``mode="augment"`` on the class labels alone, averaging the class probabilities over the
    views (plain rotation augmentation, the reference SLA is compared with)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    scores, fold_auc, pooled = [], [], []
    binary = len(set(labels)) == 2
    positive = sorted(set(labels))[-1]
    for r in range(repeats):
        oof = np.full(len(y), np.nan)
        for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed + r).split(features, y, groups):
            assert not set(np.asarray(groups)[train]) & set(np.asarray(groups)[test])
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5, class_weight="balanced"))
            if views > 1:
                predicted, proba, order = _view_probe(clf, features, y, train, test, views, mode)
            else:
                clf.fit(features[train], y[train])
                predicted, proba, order = clf.predict(features[test]), clf.predict_proba(features[test]), clf.classes_
            scores.append(balanced_accuracy_score(y[test], predicted))
            if binary:
                oof[test] = proba[:, list(order).index(positive)]
                if len(set(y[test])) == 2:
                    fold_auc.append(roc_auc_score(y[test] == positive, oof[test]))
        if binary:
            pooled.append(roc_auc_score(y == positive, oof))
    out = {
        "balanced_accuracy": round(float(np.mean(scores)), 4),
        "std": round(float(np.std(scores)), 4),
        "folds": [round(float(s), 4) for s in scores],
        "repeats": repeats,
    }
    if binary:
        out["auc"] = round(float(np.mean(fold_auc)), 4)  # mean per-fold AUC (see above)
        out["auc_std"] = round(float(np.std(fold_auc)), 4)
        out["auc_folds"] = [round(float(a), 4) for a in fold_auc]
        out["auc_pooled"] = round(float(np.mean(pooled)), 4)  # biased low with few groups; reference only
    return out


def _view_probe(clf, features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, views: int,
                mode: str) -> tuple[np.ndarray, np.ndarray, list]:
    """(predicted labels, class probabilities, their classes) of the test rows, trained on every view of the
    training rows (see :func:`probe`)."""
    classes = sorted(set(y.tolist()))
    index = np.array([classes.index(v) for v in y])
    d = features.shape[1] // views
    view = [features[:, r * d : (r + 1) * d] for r in range(views)]
    x = np.concatenate([v[train] for v in view])
    if mode == "sla":  # joint label c * views + r
        clf.fit(x, np.concatenate([index[train] * views + r for r in range(views)]))
        cols = {int(c): j for j, c in enumerate(clf.classes_)}  # a class absent from training scores -inf
        scored = [clf.decision_function(view[r][test]) for r in range(views)]
        logits = np.stack([np.mean([scored[r][:, cols[c * views + r]] if c * views + r in cols else
                                    np.full(len(test), -np.inf) for r in range(views)], 0)
                           for c in range(len(classes))], 1)
        proba = np.exp(logits - logits.max(1, keepdims=True))
        proba /= proba.sum(1, keepdims=True)
    else:  # class labels for every view; probabilities averaged over the views
        clf.fit(x, np.concatenate([index[train]] * views))
        proba = np.zeros((len(test), len(classes)))
        proba[:, clf.classes_.astype(int)] = np.mean([clf.predict_proba(view[r][test]) for r in range(views)], 0)
    return np.asarray(classes)[proba.argmax(1)], proba, classes


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
