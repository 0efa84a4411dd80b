"""INS trained end to end (``pathweak train --head ins --finetune-encoder``) against INS on frozen features at
equal CPU time, on pseudo-slides with 1-5 % tumour. Prints JSON (and writes it to --out).

    python benchmarks/ins_e2e.py [--pretrain-cpu-minutes 3] [--encoder-epochs 4] [--out benchmarks/results/ins_e2e.json]

Cohort: pseudo-slides of real LC25000 tiles (``pathweak.pseudoslides``, the pipeline and the measures of
benchmarks/mil_bench.py), ``--n-train`` + ``--n-test`` slides of ``--grid`` tiles a side, half of them with one
or two tumour regions covering ``--tumour-fraction`` (default 1-5 %) of the grid; train and test slides draw
from disjoint source groups; the labels' split column keeps the test slides out of all training.

Arms (the same 4-block ViT-Tiny at 64 px, one torch thread, loader work in the training process):

- ``base``: MAE pretrained for ``--pretrain-cpu-minutes`` of CPU time on the training slides' tiles, then INS on
  its frozen features;
- ``end_to_end``: the ``base`` encoder fine-tuned with INS for ``--encoder-epochs`` (train/finetune.py), then INS
  on the fine-tuned encoder's features (what ``train --finetune-encoder`` writes);
- ``frozen_equal_cpu``: MAE pretrained from scratch for the ``base`` budget plus the CPU time the fine-tuning took
  (measured in this run), then INS on its frozen features: the same compute as ``end_to_end`` spent on the
  encoder without labels.

Budget rule: pretraining stops at a CPU-time budget (SSLConfig ``max_cpu_minutes``) and the fine-tuning's CPU time
is measured by its process (``time.process_time``), so other jobs on a shared machine skew neither; wall times
are reported beside. INS heads (``--seeds``) train with the same settings in every arm; measures on the test
slides: slide AUC, instance AUC of the tile tumour probability (pooled, and per positive slide), mask Dice.
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

from linear_probe import DEFAULT_DATA as LABELED  # noqa: E402
from mil_bench import build_cohort, evaluate_run, head_options, run_head, tile, tile_truth  # noqa: E402
from unified_mae import config, finish, pretrain_arm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=LABELED / "lc25000_lung", help="folder with groups.csv (LC25000 layout)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "ins_e2e")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ins_e2e.json")
    ap.add_argument("--pretrain-cpu-minutes", type=float, default=3.0)
    ap.add_argument("--encoder-epochs", type=int, default=4)
    ap.add_argument("--encoder-lr", type=float, default=1e-4)
    ap.add_argument("--frozen-blocks", type=int, default=0)
    ap.add_argument("--tile-batch", type=int, default=32)
    ap.add_argument("--warmup-epochs", type=int, default=5)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epoch-samples", type=int, default=2048)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--head-opt", action="append", default=[], metavar="ins:KEY=VALUE")
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--grid", nargs=2, type=int, default=[10, 16])
    ap.add_argument("--tumour-fraction", nargs=2, type=float, default=[0.01, 0.05])
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--min-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--reuse", action="store_true", help="reuse encoders an earlier run pretrained in --work")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from pathweak.features import extract_features
    from pathweak.features.bank import load_feature_bank
    from pathweak.train import TrainConfig, read_labels
    from pathweak.train.end_to_end import train_end_to_end
    from pathweak.train.finetune import FinetuneConfig

    t0, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    cohort, slides = build_cohort(args)
    stores = tile(slides, args.work)
    train_ids = [s.slide_id for s in slides if s.split == "train"]
    test_ids = [s.slide_id for s in slides if s.split == "test"]
    labels = cohort / "labels.csv"
    table = read_labels(labels)
    meta = json.loads((cohort / "pseudo_slides.json").read_text())
    positives = [s for s in meta["slides"] if s["label"] == "tumour"]
    result: dict = {
        "data": str(args.data),
        "cohort": {"train": len(train_ids), "test": len(test_ids), "grid": args.grid,
                   "tumour_fraction": [min(s["tumour_fraction"] for s in positives),
                                       max(s["tumour_fraction"] for s in positives)],
                   "tumour_cells_per_positive_slide": [min(s["tumour_cells"] for s in positives),
                                                       max(s["tumour_cells"] for s in positives)],
                   "tiles": int(sum(np.prod(s["grid"]) for s in meta["slides"]))},
        "training": {"head": "ins", "seeds": args.seeds, "max_epochs": args.epochs, "min_epochs": args.min_epochs,
                     "patience": args.patience, "lr": args.lr, "head_options": head_options(args.head_opt, "ins")},
        "budget": {"rule": "pretraining stops at a CPU-time budget of its process (SSLConfig.max_cpu_minutes, "
                           "num_workers=0, one torch thread); the fine-tuning's process CPU time is measured; "
                           "frozen_equal_cpu pretrains for base + that time", "base_cpu_minutes": args.pretrain_cpu_minutes},
        "arms": {},
    }
    train_stores = [stores[s] for s in train_ids]
    base, result["pretraining_base"] = pretrain_arm("base", train_stores, config("mae", args, args.pretrain_cpu_minutes),
                                                    args.work, args.reuse)
    truth: dict = {}

    def frozen(name: str, encoder) -> None:
        nonlocal truth
        (done, *_) = extract_features([stores[s.slide_id] for s in slides], encoder, args.work, num_workers=0,
                                      progress=False)
        folder = Path(done.store).parent
        truth = truth or tile_truth(folder, test_ids, cohort / "ground_truth.csv")
        bank = load_feature_bank([folder], slide_ids=table.slide_ids, device="cpu", progress=False)
        result["arms"][name] = run_head("ins", folder, labels, truth, args, bank)
        print(name, result["arms"][name]["summary"], flush=True)

    frozen("base", base)

    cfg = TrainConfig(head="ins", head_options=head_options(args.head_opt, "ins"), seeds=tuple(args.seeds),
                      max_epochs=args.epochs, min_epochs=args.min_epochs, patience=args.patience, lr=args.lr,
                      bootstrap=0, device="cpu")
    ft = FinetuneConfig(f"pathweak:{args.work / 'pretrain_base'}", encoder_lr=args.encoder_lr, epochs=args.encoder_epochs,
                        frozen_blocks=args.frozen_blocks, tile_batch=args.tile_batch, warmup_epochs=args.warmup_epochs)
    started = time.perf_counter()
    run = train_end_to_end([stores[s.slide_id] for s in slides], labels, args.work / "runs" / "end_to_end", cfg, ft,
                           progress=False)
    record = run.summary["finetune"]
    bank = load_feature_bank([record["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    result["arms"]["end_to_end"] = evaluate_run(run, truth, args.seeds, bank, time.perf_counter() - started)
    result["finetune"] = {k: record[k] for k in ("options", "history", "parameters", "seconds", "cpu_seconds")}
    print("end_to_end", result["arms"]["end_to_end"]["summary"], record["history"], flush=True)

    equal = args.pretrain_cpu_minutes + record["cpu_seconds"] / 60
    result["budget"]["frozen_equal_cpu_minutes"] = round(equal, 3)
    longer, result["pretraining_equal_cpu"] = pretrain_arm("equal_cpu", train_stores, config("mae", args, equal),
                                                           args.work, args.reuse)
    frozen("frozen_equal_cpu", longer)
    arms = result["arms"]
    result["end_to_end_minus_frozen_equal_cpu"] = {
        k: round(arms["end_to_end"]["summary"][k]["mean"] - arms["frozen_equal_cpu"]["summary"][k]["mean"], 4)
        for k in arms["end_to_end"]["summary"] if k in arms["frozen_equal_cpu"]["summary"]}
    finish(result, args.out, "ins_e2e", t0, load_start)


if __name__ == "__main__":
    main()
