"""MIL heads on real tissue: pseudo-slides composed of real labelled H&E tiles, run through the whole
pipeline (pyramidal TIFF → tile → features → heads). Prints JSON (and a markdown table with --markdown).

    python benchmarks/mil_bench.py [--data ../shared/data/labeled/lc25000_lung] [--encoder pathweak:DIR]
                                   [--pretrain-minutes 6] [--heads abmil clam_sb ...] [--seeds 0 1 2]
                                   [--no-baseline] [--head-opt wsseg:pool=topk ...]

Cohort (``pathweak.pseudoslides``): ``--n-train`` + ``--n-test`` slides, grids of ``--grid`` tiles a
side at 0.5 um/px; negatives all benign (lung_n); positives one or two contiguous tumour regions
(lung_aca / lung_scc) covering 5-30% of the grid; train and test slides draw from disjoint source
groups of groups.csv; ground_truth.csv records every tumour cell. ``--data`` takes any folder of the
same layout.

Encoders: pathweak's own ViT (``--encoder pathweak:DIR``, or pretrained here with MAE on the training
slides' tiles only, for ``--pretrain-minutes`` on the CPU; ``--method`` mae (default) or dino) and the same architecture at random
initialisation (the baseline).

Per encoder, head and seed: ``pathweak.train.train_cohort`` on the train split (validation patients
carved from it, early stopping), then on the test slides: slide AUC and balanced accuracy; instance AUC
of the attention (within each positive test slide, tumour vs benign tiles, averaged over slides; the
tumour class's branch for multi-branch heads) and of the per-tile tumour probability (pooled over the
tiles of all test slides, and per positive slide averaged as for the attention); the Dice of the tumour
mask (the head's thresholded ``mask`` score when it gives one, else tile probability >= 0.5) against the
ground-truth tumour tiles, per positive test slide (MONAI), and the share of negative slides' tiles the
mask flags. With ``abmil`` among the heads, ``targets`` checks the acceptance targets (ABMIL's slide AUC;
for ``ins`` and ``wsseg``: instance AUC >= 0.90 and above ABMIL's attention, Dice >= 0.70, slide AUC not
below ABMIL's). A new head registered in ``pathweak.heads`` is benchmarked by name; a new
instance-level measure is one more function in ``INSTANCE_METRICS``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "labeled" / "lc25000_lung"
DEFAULT_HEADS = ["mean", "max", "abmil", "clam_sb", "clam_mb", "transmil", "dsmil"]


# -- pipeline stages ----------------------------------------------------------------------------------------


def build_cohort(args: argparse.Namespace) -> tuple[Path, list[Any]]:
    from pathweak.pseudoslides import PseudoSlideSpec, compose_pseudo_slides

    fraction = getattr(args, "tumour_fraction", None)  # (low, high) share of tumour cells, when given
    spec = PseudoSlideSpec(n_train=args.n_train, n_test=args.n_test, grid=tuple(args.grid), seed=args.cohort_seed,
                           **({"tumour_fraction": tuple(fraction)} if fraction else {}))
    cohort = args.work / "cohort"
    return cohort, compose_pseudo_slides(args.data, cohort, spec)


def tile(slides: list[Any], work: Path) -> dict[str, Path]:
    from pathweak.tiling import tile_slides

    results = tile_slides([s.path for s in slides], work, workers=1, progress=False)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"tiling failed: {failed[0].error}")
    return {r.slide_id: Path(r.store) for r in results}


# per-method settings that learned fastest on 2 CPU cores (benchmarks/ssl_probe.py, docs/benchmarks.md)
TUNED = {"mae": {"mask_ratio": 0.75, "lr": 1.5e-3, "batch_size": 64}, "dino": {}}


def encoders(args: argparse.Namespace, train_stores: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """{name: encoder}, plus what pretraining did. The random-init baseline is the trained encoder's
    architecture (same timm arguments, pooling included) at random weights."""
    from pathweak.encoders import create_encoder

    info: dict[str, Any] = {}
    if args.encoder:
        trained = create_encoder(args.encoder)
        info = {"encoder": args.encoder, "pretrained_here": False}
        kwargs = {"depth": args.depth, "img_size": args.img_size}
    else:
        from pathweak.ssl import SSLConfig, pretrain

        folder = args.work / f"pretrain_{args.method}"
        if not (folder / "encoder.json").exists():
            cfg = SSLConfig.tiny(args.method, depth=args.depth, img_size=args.img_size, max_epochs=1000,
                                 max_minutes=args.pretrain_minutes, samples_per_epoch=args.epoch_samples, seed=0,
                                 local_size=48 if args.img_size <= 128 else 96, **TUNED.get(args.method, {}))
            res = pretrain(train_stores, folder, cfg, resume=False, progress=False)
            info = {"steps": res.steps, "epochs": res.epochs, "seconds": round(res.seconds, 1),
                    "rankme": [round(r["rankme"], 2) for r in res.rankme]}
        meta = json.loads((folder / "encoder.json").read_text())
        kwargs = meta["timm_kwargs"]
        t = meta["training"]
        info = {"encoder": f"pathweak:{folder}", "pretrained_here": True, "method": t["method"],
                "tiles": t["tiles"], "steps": t["steps"], "seconds": t["seconds"], "stores": len(t["stores"]), **info}
        trained = create_encoder(f"pathweak:{folder}")
    return {"random_init": create_encoder("timm:vit_tiny_patch16_224", weights="random:0", **kwargs),
            "pathweak": trained}, info


def extract(encs: dict[str, Any], stores: list[Path], work: Path) -> dict[str, Path]:
    from pathweak.features import extract_features

    folders = {}
    for name, enc in encs.items():
        done = extract_features(stores, enc, work, num_workers=1, progress=False)
        failed = [r for r in done if r.status == "failed"]
        if failed:
            raise SystemExit(f"extraction failed: {failed[0].error}")
        folders[name] = Path(done[0].store).parent
    return folders


# -- evaluation ----------------------------------------------------------------------------------------------


def _auc(truth: np.ndarray, score: np.ndarray) -> float:
    from pathweak.train.metrics import binary_auc

    return binary_auc(np.asarray(truth, bool), np.asarray(score, np.float64))


def attention_auc(preds: dict[str, Any], truth: dict[str, np.ndarray], positive: int) -> float:
    """Mean over positive test slides of the AUC of the attention (tumour branch) against tumour tiles."""
    aucs = []
    for sid, p in preds.items():
        t = truth[sid]
        if p.attention is None or t.all() or not t.any():
            continue
        a = p.attention[:, positive if p.attention.shape[1] > 1 else 0]
        aucs.append(_auc(t, a))
    return float(np.mean(aucs)) if aucs else float("nan")


def score_auc(preds: dict[str, Any], truth: dict[str, np.ndarray], positive: int) -> float:
    """AUC of the per-tile tumour probability, pooled over the tiles of all test slides."""
    t = np.concatenate([truth[s] for s in preds])
    s = np.concatenate([p.instance[:, positive] for p in preds.values()])
    return _auc(t, s)


def within_score_auc(preds: dict[str, Any], truth: dict[str, np.ndarray], positive: int) -> float:
    """Mean over positive test slides of the AUC of the per-tile tumour probability (the attention measure's
    protocol, for heads without attention)."""
    aucs = [_auc(truth[s], p.instance[:, positive]) for s, p in preds.items() if truth[s].any() and not truth[s].all()]
    return float(np.mean(aucs)) if aucs else float("nan")


def tile_mask(p: Any, positive: int) -> np.ndarray:
    """The head's thresholded ``mask`` when it gives one, else tumour probability >= 0.5."""
    return p.extra["mask"] > 0.5 if "mask" in p.extra else p.instance[:, positive] >= 0.5


def mask_dice(preds: dict[str, Any], truth: dict[str, np.ndarray], positive: int) -> float:
    """Mean over positive test slides of the Dice of the tumour mask against the ground-truth tumour tiles
    (MONAI's compute_dice)."""
    import torch
    from monai.metrics import compute_dice

    dice = []
    for sid, p in preds.items():
        if not truth[sid].any():
            continue
        pred = torch.as_tensor(tile_mask(p, positive), dtype=torch.float32)[None, None]
        gt = torch.as_tensor(truth[sid], dtype=torch.float32)[None, None]
        dice.append(float(compute_dice(pred, gt, include_background=True, ignore_empty=False)[0, 0]))
    return float(np.mean(dice)) if dice else float("nan")


def negative_mask_fraction(preds: dict[str, Any], truth: dict[str, np.ndarray], positive: int) -> float:
    """Share of the tiles of negative test slides that the tumour mask flags (false positives)."""
    flags = [tile_mask(p, positive) for s, p in preds.items() if not truth[s].any()]
    return float(np.concatenate(flags).mean()) if flags else float("nan")


INSTANCE_METRICS: dict[str, Callable[[dict[str, Any], dict[str, np.ndarray], int], float]] = {
    "instance_auc_attention": attention_auc,
    "instance_auc_scores": score_auc,
    "instance_auc_scores_within": within_score_auc,
    "mask_dice": mask_dice,
    "negative_mask_fraction": negative_mask_fraction,
}


def tile_truth(features: Path, test_ids: list[str], ground_truth: Path) -> dict[str, np.ndarray]:
    """Per test slide, tumour (bool) of each FeatureStore row, from ground_truth.csv by coordinates."""
    from pathweak.features import FeatureStore
    from pathweak.pseudoslides import read_ground_truth

    gt = read_ground_truth(ground_truth)
    out = {}
    for sid in test_ids:
        coords = FeatureStore.open(features / f"{sid}.zarr").coords
        out[sid] = np.array([gt[sid][(int(x), int(y))] for x, y in coords], bool)
    return out


def head_options(items: list[str], head: str) -> dict[str, Any]:
    """The ``--head-opt HEAD:KEY=VALUE`` options of ``head`` (values read as YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        name, _, kv = item.partition(":")
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--head-opt {item!r} is not HEAD:KEY=VALUE")
        if name == head:
            out[key] = yaml.safe_load(value)
    return out


def run_head(head: str, features: Path, labels: Path, truth: dict[str, np.ndarray], args: argparse.Namespace,
             bank: Any, label_augmentation: str | None = None) -> dict[str, Any]:
    from pathweak.train import TrainConfig, train_cohort

    cfg = TrainConfig(head=head, head_options=head_options(args.head_opt, head), seeds=tuple(args.seeds),
                      max_epochs=args.epochs, min_epochs=args.min_epochs,
                      patience=args.patience, lr=args.lr, bootstrap=0, device="cpu",
                      label_augmentation=label_augmentation)
    out = args.work / "runs" / features.name / head
    started = time.perf_counter()
    run = train_cohort([features], labels, out, cfg, progress=False, bank=bank)
    return evaluate_run(run, truth, args.seeds, bank, time.perf_counter() - started)


def evaluate_run(run: Any, truth: dict[str, np.ndarray], seeds: list[int], bank: Any, seconds: float) -> dict[str, Any]:
    """Per seed, the run's slide metrics and the instance measures of its fold-0 model on the ``truth`` slides
    (read from ``bank``); their mean and spread."""
    from pathweak.train import load_model

    out = run.out_dir
    positive = run.summary["classes"].index("tumour")
    per_seed = []
    for seed in seeds:
        m = dict(run.summary["seeds"][str(seed)]["metrics"])
        model = load_model(out / "models" / f"seed{seed}_fold0")
        preds = {sid: model.predict(bank.bag(bank.index(sid)), bank.grid(bank.index(sid))) for sid in truth}
        for name, fn in INSTANCE_METRICS.items():
            m[name] = fn(preds, truth, positive)
        fold = run.summary["seeds"][str(seed)]["folds"][0]
        m["best_epoch"], m["epochs"] = fold["best_epoch"], fold["epochs"]
        per_seed.append({"seed": seed, **{k: round(float(v), 4) for k, v in m.items() if not np.isnan(v)}})  # valid JSON
    keys = ["auc", "balanced_accuracy", *INSTANCE_METRICS]
    summary = {}
    for k in keys:
        values = [r[k] for r in per_seed if k in r]
        if values:
            summary[k] = {"mean": round(statistics.mean(values), 4),
                          "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
    return {"summary": summary, "seeds": per_seed, "train_seconds": round(seconds, 1)}


def targets(heads: dict[str, Any]) -> dict[str, bool]:
    """The acceptance targets (means over seeds, trained encoder): ABMIL's slide AUC; for the instance-level
    heads, instance AUC >= 0.90 and above ABMIL's attention, mask Dice >= 0.70, slide AUC not below ABMIL's."""
    mean = lambda h, k: heads[h]["summary"].get(k, {}).get("mean", float("nan"))  # noqa: E731
    out = {"abmil_slide_auc>=0.95": mean("abmil", "auc") >= 0.95}
    for h in ("ins", "wsseg"):
        if h in heads:
            out[f"{h}_instance_auc>=0.90"] = mean(h, "instance_auc_scores") >= 0.90
            out[f"{h}_instance_auc>abmil_attention"] = mean(h, "instance_auc_scores_within") > mean("abmil", "instance_auc_attention")
            out[f"{h}_mask_dice>=0.70"] = mean(h, "mask_dice") >= 0.70
            out[f"{h}_slide_auc>=abmil"] = mean(h, "auc") >= mean("abmil", "auc")
    return out


def markdown(result: dict[str, Any]) -> str:
    """The table of docs/benchmarks.md: heads x encoders, mean ± std over seeds."""
    enc_names = list(result["encoders"])
    cols = [("auc", "slide AUC"), ("balanced_accuracy", "bal. acc."), ("instance_auc_attention", "inst. AUC (attention)"),
            ("instance_auc_scores", "inst. AUC (tile prob.)"), ("instance_auc_scores_within", "inst. AUC (tile prob., per slide)"),
            ("mask_dice", "mask Dice"), ("negative_mask_fraction", "mask on negatives")]
    head = "| head | " + " | ".join(f"{label} {e}" for e in enc_names for _, label in cols) + " |"
    lines = [head, "|" + "---|" * (1 + len(enc_names) * len(cols))]
    for h in result["heads"]:
        cells = []
        for e in enc_names:
            s = result["encoders"][e]["heads"][h]["summary"]
            cells += [f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if k in s else "–" for k, _ in cols]
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with groups.csv (file,label,source_group_id)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "mil_bench")
    ap.add_argument("--encoder", help="pathweak:DIR of a pretrained encoder (default: pretrain one here)")
    ap.add_argument("--pretrain-minutes", type=float, default=6.0)
    ap.add_argument("--method", choices=["mae", "dino"], default="mae", help="pretraining objective (default mae)")
    ap.add_argument("--epoch-samples", type=int, default=2048, help="pretraining tiles per epoch (one RankMe point each)")
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--img-size", type=int, default=112)
    ap.add_argument("--heads", nargs="+", default=DEFAULT_HEADS)
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init encoder (train heads on the trained one only)")
    ap.add_argument("--head-opt", action="append", default=[], metavar="HEAD:KEY=VALUE",
                    help="a head option, e.g. wsseg:pool=topk (repeatable; values parsed as in `pathweak train --head-opt`)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--grid", nargs=2, type=int, default=[12, 24])
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--min-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--markdown", action="store_true", help="also print the docs table")
    args = ap.parse_args()

    import torch

    from pathweak.features.bank import load_feature_bank
    from pathweak.train import read_labels

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    cohort, slides = build_cohort(args)
    timings["compose"] = time.perf_counter() - t0
    stores = tile(slides, args.work)
    timings["tile"] = time.perf_counter() - t0 - sum(timings.values())
    train_ids = [s.slide_id for s in slides if s.split == "train"]
    test_ids = [s.slide_id for s in slides if s.split == "test"]
    encs, pretrain_info = encoders(args, [stores[s] for s in train_ids])
    if args.no_baseline:
        encs.pop("random_init")
    timings["pretrain"] = time.perf_counter() - t0 - sum(timings.values())
    folders = extract(encs, [stores[s.slide_id] for s in slides], args.work)
    timings["extract"] = time.perf_counter() - t0 - sum(timings.values())
    labels = cohort / "labels.csv"
    table = read_labels(labels)
    meta = json.loads((cohort / "pseudo_slides.json").read_text())
    result: dict[str, Any] = {
        "data": str(args.data),
        "cohort": {"train": len(train_ids), "test": len(test_ids), "grid": args.grid,
                   "tiles": int(sum(np.prod(s["grid"]) for s in meta["slides"])),
                   "positives": {sp: sum(1 for s in meta["slides"] if s["split"] == sp and s["label"] == "tumour")
                                 for sp in ("train", "test")},
                   "tumour_fraction_range": [min(s["tumour_fraction"] for s in meta["slides"] if s["label"] == "tumour"),
                                             max(s["tumour_fraction"] for s in meta["slides"] if s["label"] == "tumour")],
                   "source_groups": {side: {c: len(g) for c, g in v.items()} for side, v in meta["source_groups"].items()}},
        "pretraining": pretrain_info,
        "training": {"seeds": args.seeds, "max_epochs": args.epochs, "min_epochs": args.min_epochs,
                     "patience": args.patience, "lr": args.lr, "val": "20% of the training patients"},
        "torch_threads": torch.get_num_threads(),
        "heads": args.heads,
        "head_options": {h: head_options(args.head_opt, h) for h in args.heads},
        "encoders": {},
    }
    for name, folder in folders.items():
        bank = load_feature_bank([folder], slide_ids=table.slide_ids, device="cpu", progress=False)
        truth = tile_truth(folder, test_ids, cohort / "ground_truth.csv")
        entry: dict[str, Any] = {"encoder_id": folder.name, "heads": {}}
        for head in args.heads:
            entry["heads"][head] = run_head(head, folder, labels, truth, args, bank)
            print(name, head, entry["heads"][head]["summary"], flush=True)
        result["encoders"][name] = entry
    timings["train_eval"] = time.perf_counter() - t0 - sum(timings.values())
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    if "abmil" in args.heads:
        result["targets"] = targets(result["encoders"]["pathweak"]["heads"])
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(markdown(result))


if __name__ == "__main__":
    main()
