"""Self-supervised label augmentation (SLA: joint class x rotation labels, aggregated over the rotations at
prediction) against the same probe or head without it, in one run on one encoder. Prints JSON (and writes it
to --out).

    python benchmarks/sla_bench.py [--pretrain-cpu-minutes 4] [--out benchmarks/results/sla_bench.json]

Encoder: a 4-block ViT-Tiny (64 px) pretrained here with MAE for ``--pretrain-cpu-minutes`` of CPU time
(SSLConfig ``max_cpu_minutes``) on the EBHI and GlaS tiles and the pseudo-slides' training tiles, or
``--encoder pathweak:DIR``. Features: each tile's embedding under the 4 rotations (``extract --rotations 4``;
view 0 is the plain feature every baseline uses).

- Linear probe on EBHI (3 classes) and GlaS (2 classes; an image is the mean of its crops, per view), the probe
  of benchmarks/ssl_probe.py (5-fold grouped by patient, ``--probe-repeats`` shuffles, the same splits for
  every arm): ``plain`` (view 0), ``augment`` (every
  view with its class label, probabilities averaged over views: rotation augmentation without joint labels)
  and ``sla`` (joint labels, SLA's aggregated inference).
- Heads on pseudo-slides of real LC25000 tiles (``pathweak.pseudoslides``; the pipeline and the instance
  measures of benchmarks/mil_bench.py: slide AUC, instance AUC of the tile tumour probability pooled and per
  positive slide, mask Dice): each head trained by ``train_cohort`` on the plain features and with
  ``label_augmentation="rotation"`` on the rotation features, same settings and seeds.
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

from linear_probe import DEFAULT_DATA, build_stores, load_tasks, probe  # noqa: E402
from mil_bench import build_cohort, run_head, tile, tile_truth  # noqa: E402
from unified_mae import config, finish, pretrain_arm  # noqa: E402


def view_features(encoder, store: Path, views: int = 4) -> np.ndarray:
    """(N, views * D) float32: every tile's embedding under each rotation (the rows ``extract --rotations``
    writes)."""
    import torch

    from pathweak.features.views import RotatedViews
    from pathweak.tiling import TileStore

    rotated = RotatedViews(encoder, views)
    with torch.no_grad(), TileStore.open(store) as s:
        return np.concatenate([rotated.embed(torch.from_numpy(s.read_tiles(slice(a, min(len(s), a + 256))))).numpy()
                               for a in range(0, len(s), 256)])


def probe_arms(feats: np.ndarray, task: dict, repeats: int, views: int = 4) -> dict:
    if "image_of_tile" in task:  # an image: the mean of its crops, view by view
        owner = task["image_of_tile"]
        feats = np.stack([feats[owner == i].mean(0) for i in range(len(task["labels"]))])
    d = feats.shape[1] // views
    labels, groups = task["labels"], task["groups"]
    arms = {"plain": probe(feats[:, :d], labels, groups, repeats=repeats),
            "augment": probe(feats, labels, groups, repeats=repeats, views=views, mode="augment"),
            "sla": probe(feats, labels, groups, repeats=repeats, views=views, mode="sla")}
    return {arm: {k: p[k] for k in ("balanced_accuracy", "std", "auc", "auc_std") if k in p} for arm, p in arms.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the labeled/ folder")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "sla_bench")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sla_bench.json")
    ap.add_argument("--encoder", help="pathweak:DIR (default: pretrain one here)")
    ap.add_argument("--pretrain-cpu-minutes", type=float, default=4.0)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epoch-samples", type=int, default=2048)
    ap.add_argument("--probe-repeats", type=int, default=2, help="shuffles of the probe's grouped 5-fold split")
    ap.add_argument("--heads", nargs="+", default=["ins", "wsseg", "abmil"])
    ap.add_argument("--head-opt", action="append", default=[], metavar="HEAD:KEY=VALUE")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--grid", nargs=2, type=int, default=[10, 16])
    ap.add_argument("--tumour-fraction", nargs=2, type=float, default=[0.05, 0.3])
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--min-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--reuse", action="store_true", help="reuse the encoder an earlier run pretrained in --work")
    args = ap.parse_args()
    args.data_lc = args.data / "lc25000_lung"
    import torch

    torch.set_num_threads(1)
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.features.bank import load_feature_bank
    from pathweak.train import read_labels

    t0, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    tasks = load_tasks(args.data, args.work, ["ebhi", "glas"])
    flat = build_stores(tasks, args.work)
    cohort_args = argparse.Namespace(**{**vars(args), "data": args.data_lc})
    cohort, slides = build_cohort(cohort_args)
    stores = tile(slides, args.work)
    train_ids = [s.slide_id for s in slides if s.split == "train"]
    test_ids = [s.slide_id for s in slides if s.split == "test"]
    if args.encoder:
        encoder, pretraining = create_encoder(args.encoder), {"encoder": args.encoder}
    else:
        cfg = config("mae", args, args.pretrain_cpu_minutes)
        encoder, pretraining = pretrain_arm("mae", [*flat.values(), *(stores[s] for s in train_ids)], cfg, args.work,
                                            args.reuse)
    result: dict = {"data": str(args.data), "encoder": encoder.info.name, "pretraining": pretraining,
                    "views": "4 rotations (0, 90, 180, 270 degrees)", "probe": {}, "heads": {}}
    for name, task in tasks.items():
        result["probe"][name] = probe_arms(view_features(encoder, flat[name]), task, args.probe_repeats)
        print(name, result["probe"][name], flush=True)

    folders = {}
    for arm, rotations in (("plain", 1), ("sla", 4)):
        done = extract_features([stores[s.slide_id] for s in slides], encoder, args.work, num_workers=0,
                                progress=False, rotations=rotations)
        folders[arm] = Path(done[0].store).parent
    labels = cohort / "labels.csv"
    table = read_labels(labels)
    truth = tile_truth(folders["plain"], test_ids, cohort / "ground_truth.csv")
    meta = json.loads((cohort / "pseudo_slides.json").read_text())
    result["cohort"] = {"train": len(train_ids), "test": len(test_ids), "grid": args.grid,
                        "tumour_fraction": args.tumour_fraction,
                        "tiles": int(sum(np.prod(s["grid"]) for s in meta["slides"]))}
    result["training"] = {"seeds": args.seeds, "max_epochs": args.epochs, "min_epochs": args.min_epochs,
                          "patience": args.patience, "lr": args.lr}
    banks = {arm: load_feature_bank([f], slide_ids=table.slide_ids, device="cpu", progress=False)
             for arm, f in folders.items()}
    for head in args.heads:
        row = result["heads"][head] = {}
        for arm in ("plain", "sla"):
            row[arm] = run_head(head, folders[arm], labels, truth, args, banks[arm],
                                label_augmentation="rotation" if arm == "sla" else None)
            print(head, arm, row[arm]["summary"], flush=True)
        row["sla_minus_plain"] = {k: round(row["sla"]["summary"][k]["mean"] - row["plain"]["summary"][k]["mean"], 4)
                                  for k in row["plain"]["summary"] if k in row["sla"]["summary"]}
    finish(result, args.out, "sla_bench", t0, load_start)


if __name__ == "__main__":
    main()
