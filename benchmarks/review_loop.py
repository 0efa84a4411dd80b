"""The review loop, simulated (issue 29): does a pathologist's handful of corrections per slide lift the
heads' tile-level accuracy, and does pathweak's review queue pick better tiles than chance? Prints JSON
and writes ``benchmarks/results/review_loop.json``.

    python benchmarks/review_loop.py [--heads ins wsseg abmil] [--ks 0 5 20] [--datasets pseudo ebhi]

A simulated reviewer corrects k tiles per training slide, taking them from the review queue
(``pathweak.heatmap.review_queue``: the rule `pathweak review export` writes; computed from the previous
round's model) or at random, over rounds k = 0 (weak labels only), 5, then 20 (15 more); each correction is
the tile's true class. After each round the head is trained again on the slide labels plus all corrections
so far (``LabelTable.instance_labels``: the training code `pathweak train --instance-labels` runs), and on
held-out slides the benchmark measures the instance AUC (per-tile tumour probability against the true
tumour tiles, pooled over the test tiles) and the Dice of the tumour mask (the head's ``mask`` score, else
probability >= 0.5) against the true tumour tiles, averaged over the positive test slides (MONAI).

Data (both real):

- ``pseudo``: pseudo-slides of real LC25000 lung tiles (``pathweak.pseudoslides``), tumour regions covering
  1-5 % of the grid, run through tiling and feature extraction; train and test slides from disjoint
  source groups; truth from ground_truth.csv.
- ``ebhi``: EBHI-Seg biopsy images, each one bag of its 14x14 ViT patch tokens; Adenocarcinoma against
  Normal + Polyp; a token is tumour when more than half of its pixels are in the expert mask; patients
  split 70/30.

Features: a random-initialised ViT-Tiny (``--encoder`` for another), the same for both encoders' baselines
and rounds. Goals: k = 20 lifts the Dice by >= 0.10 over k = 0 for at least one head
(``best_dice_lift_k20``), and the queue beats random choice at equal k.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mil_bench import mask_dice, score_auc  # noqa: E402  (the instance measures of mil_bench)

# ../shared/data/labeled beside the repository (or beside a folder above it, for git worktrees)
SHARED = next((p / "shared" / "data" / "labeled" for p in HERE.parents if (p / "shared" / "data").is_dir()),
              HERE.parent.parent / "shared" / "data" / "labeled")


@dataclass
class Dataset:
    """A cohort held as a bag source with its labels, one train/val/test fold and the true tumour tiles."""

    name: str
    bank: Any
    table: Any
    fold: Any
    truth: dict[int, np.ndarray]  # bank row -> tumour (bool) per tile
    positive: int
    negative: int
    info: dict[str, Any]


def _labels_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide_id", "patient_id", "label", "split"])
        w.writerows(rows)
    return path


def _fold(table: Any) -> Any:
    from pathweak.train import make_folds

    return make_folds(table, seed=0)[0]  # the split column: train (val carved from it) / test


def pseudo_slides(args: argparse.Namespace, encoder: Any) -> Dataset:
    from pathweak.features import extract_features
    from pathweak.features.bank import load_feature_bank
    from pathweak.pseudoslides import PseudoSlideSpec, compose_pseudo_slides, read_ground_truth
    from pathweak.tiling import tile_slides
    from pathweak.train import read_labels

    work = args.work / "pseudo"
    spec = PseudoSlideSpec(n_train=args.n_train, n_test=args.n_test, grid=tuple(args.grid),
                           tumour_fraction=(0.01, 0.05), seed=args.cohort_seed)
    slides = compose_pseudo_slides(args.lc25000, work, spec)
    tiled = tile_slides([s.path for s in slides], work, workers=1, progress=False)
    done = extract_features([t.store for t in tiled], encoder, work, num_workers=0, progress=False)
    failed = [r.error for r in done if r.status == "failed"]
    if failed:
        raise SystemExit(f"extraction failed: {failed[0]}")
    table = read_labels(work / "labels.csv")
    bank = load_feature_bank([Path(done[0].store).parent], slide_ids=table.slide_ids, device="cpu", progress=False)
    gt = read_ground_truth(work / "ground_truth.csv")
    truth = {i: np.array([gt[sid][(int(x), int(y))] for x, y in bank.coords(i)], bool)
             for i, sid in enumerate(table.slide_ids)}
    meta = json.loads((work / "pseudo_slides.json").read_text())
    fractions = [s["tumour_fraction"] for s in meta["slides"] if s["label"] == "tumour"]
    info = {"slides": {"train": args.n_train, "test": args.n_test}, "grid": args.grid,
            "tiles": int(sum(len(t) for t in truth.values())),
            "tumour_fraction": [min(fractions), max(fractions)]}
    return Dataset("pseudo", bank, table, _fold(table), truth, table.classes.index("tumour"),
                   table.classes.index("normal"), info)


def ebhi(args: argparse.Namespace, encoder: Any) -> Dataset:
    from wsseg_ebhi import load_images, patient_split, read_pairs

    from pathweak.features.tokens import TokenBank
    from pathweak.train import read_labels

    rows = read_pairs(args.ebhi)
    split = patient_split(rows, 0.3, seed=0)
    rng = np.random.default_rng(0)  # a bounded subset: whole classes' images drawn at random per side
    keep = [i for i in range(len(rows)) if rng.random() < args.ebhi_share]
    rows, split = [rows[i] for i in keep], [split[i] for i in keep]
    images, masks = load_images(args.ebhi, rows)
    names = [f"{r['class']}-{Path(r['image']).stem}" for r in rows]
    bank = TokenBank.from_tiles(encoder, images, names)
    h = w = int(np.sqrt(len(bank.bag(0))))
    cell = masks.shape[1] // h
    labels = ["Adenocarcinoma" if r["class"] == "Adenocarcinoma" else "Other" for r in rows]
    table = read_labels(_labels_csv(args.work / "ebhi" / "labels.csv",
                                    [(n, r["patient_id"], lab, s) for n, r, lab, s in zip(names, rows, labels, split, strict=True)]))
    truth = {}
    for i, (m, lab) in enumerate(zip(masks, labels, strict=True)):
        frac = m[: h * cell, : w * cell].reshape(h, cell, w, cell).mean((1, 3)).ravel()
        truth[i] = (frac > 0.5) if lab == "Adenocarcinoma" else np.zeros(h * w, bool)
    info = {"images": len(rows), "token_grid": [h, w], "share_of_ebhi": args.ebhi_share,
            "adenocarcinoma": labels.count("Adenocarcinoma"), "other": labels.count("Other")}
    return Dataset("ebhi", bank, table, _fold(table), truth, table.classes.index("Adenocarcinoma"),
                   table.classes.index("Other"), info)


# -- the loop -----------------------------------------------------------------------------------------------------


def train(ds: Dataset, head: str, args: argparse.Namespace, seed: int, corrected: dict[int, dict[int, int]]) -> Any:
    """A head trained on the slide labels plus the corrections so far (bank row -> {tile: class})."""
    from pathweak.train import TrainConfig, fit_head
    from pathweak.train.instance_labels import Corrections, SlideCorrections, attach_instance_labels

    options = {"negative_class": ds.negative} if head in ("ins", "wsseg") else {}
    cfg = TrainConfig(head=head, head_options=options, max_epochs=args.epochs, min_epochs=args.min_epochs,
                      patience=args.patience, lr=args.lr, bootstrap=0, device="cpu",
                      instance_weight=args.instance_weight, bags_per_step=args.bags_per_step)
    table = replace(ds.table, warnings=[], instance_labels=None)
    if corrected:
        names = ds.table.classes
        slides = {ds.table.slide_ids[r]: SlideCorrections(np.array(list(t), np.int64), [names[c] for c in t.values()])
                  for r, t in corrected.items() if t}
        attach_instance_labels(table, Corrections(slides, source="simulated reviewer"), ds.negative, "slide")
    return fit_head(ds.bank, table, ds.fold, cfg, seed).head


def predictions(ds: Dataset, head: Any, rows: Any) -> dict[int, Any]:
    from pathweak.train import predict_bag

    return {int(i): predict_bag(head, ds.bank.bag(int(i)), ds.bank.grid(int(i)), "binary") for i in rows}


def evaluate(ds: Dataset, head: Any) -> dict[str, float]:
    preds = predictions(ds, head, ds.fold.test)
    truth = {i: ds.truth[i] for i in preds}
    return {"instance_auc": round(score_auc(preds, truth, ds.positive), 4),
            "dice": round(mask_dice(preds, truth, ds.positive), 4)}


def choose(ds: Dataset, strategy: str, pred: Any, row: int, n: int, done: dict[int, int], rng: np.random.Generator) -> list[int]:
    """``n`` more tiles of bank row ``row`` for the reviewer: from the review queue or at random."""
    from pathweak.heatmap.review_queue import review_slide

    exclude = np.array(sorted(done), np.int64)
    if strategy == "random":
        free = np.setdiff1d(np.arange(len(ds.truth[row])), exclude)
        return rng.choice(free, size=min(n, len(free)), replace=False).tolist()
    mispredicted = int(np.argmax(pred.slide)) != int(ds.table.targets[row])
    attention = None if pred.attention is None else pred.attention[:, 0]
    review = review_slide(pred.instance, ds.negative, n, attention=attention, pseudo_label=pred.extra.get("pseudo_label"),
                          mask=pred.extra.get("mask"), mispredicted=mispredicted, exclude=exclude)
    return review.queue.tolist()


def loop(ds: Dataset, head: str, args: argparse.Namespace) -> dict[str, Any]:
    """k = 0, then each k of ``args.ks`` for the queue and for random choice, per seed; means over seeds."""
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        weak = train(ds, head, args, seed, {})
        run: dict[str, Any] = {"seed": seed, "k0": evaluate(ds, weak)}
        for strategy in ("queue", "random"):
            rng = np.random.default_rng(seed)
            model, corrected, have = weak, {int(r): {} for r in ds.fold.train}, 0
            for k in [k for k in args.ks if k > 0]:
                preds = predictions(ds, model, ds.fold.train)
                for r, done in corrected.items():
                    for t in choose(ds, strategy, preds[r], r, k - have, done, rng):
                        done[int(t)] = ds.positive if ds.truth[r][t] else ds.negative  # the reviewer's truth
                have = k
                model = train(ds, head, args, seed, corrected)
                run[f"{strategy}_k{k}"] = {**evaluate(ds, model),
                                           "tumour_tiles_reviewed": int(sum(ds.truth[r][list(d)].sum() for r, d in corrected.items()))}
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
        print(ds.name, head, json.dumps(run), flush=True)
    mean: dict[str, Any] = {}
    for key in runs[0]:
        if isinstance(runs[0][key], dict):
            mean[key] = {m: round(statistics.mean(r[key][m] for r in runs), 4) for m in runs[0][key]}
    k20 = max(k for k in args.ks)
    mean["dice_lift_k20_queue"] = round(mean[f"queue_k{k20}"]["dice"] - mean["k0"]["dice"], 4)
    mean["queue_beats_random"] = {f"k{k}": mean[f"queue_k{k}"]["dice"] > mean[f"random_k{k}"]["dice"]
                                  for k in args.ks if k > 0}
    return {"mean": mean, "seeds": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lc25000", type=Path, default=SHARED / "lc25000_lung")
    ap.add_argument("--ebhi", type=Path, default=SHARED / "ebhi_seg")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "review_loop")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "review_loop.json")
    ap.add_argument("--datasets", nargs="+", default=["pseudo", "ebhi"], choices=["pseudo", "ebhi"])
    ap.add_argument("--heads", nargs="+", default=["ins", "wsseg", "abmil"])
    ap.add_argument("--ks", nargs="+", type=int, default=[0, 5, 20])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--encoder", default="timm:vit_tiny_patch16_224", help="encoder name (default: random-init ViT-Tiny)")
    ap.add_argument("--depth", type=int, default=4, help="ViT depth of the default encoder")
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--grid", nargs=2, type=int, default=[14, 20])
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--ebhi-share", type=float, default=0.3, help="share of the EBHI images used (bounded run)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--min-epochs", type=int, default=4)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bags-per-step", type=int, default=4)
    ap.add_argument("--instance-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if sorted(args.ks) != args.ks or args.ks[0] != 0:
        raise SystemExit("--ks must start at 0 and increase, e.g. 0 5 20")

    import torch

    from pathweak.encoders import create_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    kwargs = {"depth": args.depth} if args.encoder == "timm:vit_tiny_patch16_224" else {}
    result: dict[str, Any] = {"encoder": {"name": args.encoder, "weights": "random:0", **kwargs},
                              "heads": args.heads, "ks": args.ks, "seeds": args.seeds,
                              "training": {"max_epochs": args.epochs, "min_epochs": args.min_epochs,
                                           "patience": args.patience, "lr": args.lr,
                                           "bags_per_step": args.bags_per_step,
                                           "instance_weight": args.instance_weight},
                              "torch_threads": torch.get_num_threads(), "datasets": {}}
    makers = {"pseudo": (pseudo_slides, 112), "ebhi": (ebhi, 224)}
    for name in args.datasets:
        maker, size = makers[name]
        t = time.perf_counter()
        ds = maker(args, create_encoder(args.encoder, weights="random:0", img_size=size, **kwargs))
        entry: dict[str, Any] = {**ds.info, "features_seconds": round(time.perf_counter() - t, 1), "heads": {}}
        for head in args.heads:
            entry["heads"][head] = loop(ds, head, args)
        result["datasets"][name] = entry
    lifts = {f"{d}/{h}": e["heads"][h]["mean"]["dice_lift_k20_queue"]
             for d, e in result["datasets"].items() for h in e["heads"]}
    beats = {f"{d}/{h}/{k}": v for d, e in result["datasets"].items() for h in e["heads"]
             for k, v in e["heads"][h]["mean"]["queue_beats_random"].items()}
    result["best_dice_lift_k20"] = max(lifts.values())
    result["best_dice_lift_k20_at"] = max(lifts, key=lifts.get)
    result["goals"] = {"dice_lift_k20>=0.10": result["best_dice_lift_k20"] >= 0.10,
                       "queue_beats_random": {"all": all(beats.values()), "cases": beats}}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
