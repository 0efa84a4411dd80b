"""Clinical endpoints on real tissue: survival and label-proportion (LLP) training on the pseudo-slide
cohort of ``benchmarks/mil_bench.py`` (real LC25000 lung tiles laid out as pyramidal TIFFs, tile-level
truth), run through the whole pipeline (tile → features → heads). Prints JSON (and the docs tables with
--markdown); writes it to ``--json``.

    python benchmarks/clinical_bench.py [--work DIR] [--seeds 0 1 2] [--json benchmarks/results/clinical_bench.json]

Cohort (``pathweak.pseudoslides``, the mil_bench layout with more and larger tumour regions so the
burden varies): ``--n-train`` 48 + ``--n-test`` 40 slides of 8-16 tiles a side; 75 % of them hold tumour
regions covering 5-60 % of the grid, the rest benign only; train and test slides draw from disjoint
source groups. Features: pathweak's ViT architecture (6 blocks, 112 px) at random initialisation
(``timm:vit_tiny_patch16_224``, ``random:0``; no pretraining, to keep the run short).

Survival times (deterministic, ``--survival-seed``): each slide's tumour burden ``f`` (the share of its
tiles that are tumour, from ground_truth.csv) sets a proportional hazard
``h(t | f) = LAMBDA0 * exp(BETA * f)`` (exponential baseline, ``LAMBDA0`` = 0.02 per month, ``BETA`` =
10); the event time is drawn as ``T = -log(U) / h`` and censoring as ``C ~ Uniform(0, CENSOR_MAX)``
(48 months) with ``U`` and ``C`` from ``numpy.random.default_rng([survival_seed, k])`` for the k-th slide
of the labels file; ``time = min(T, C)``, ``event = T <= C``. The concordance of the true burden itself on
the test slides (the ceiling any model can reach on these draws) is reported as ``oracle``.

Runs (all on the train split, 20 % of its patients for validation and early stopping, then the 40 test
slides; ``--seeds``, mean ± std):

- survival: ``abmil`` and ``mean`` with the Cox loss (torchsurv), and ``abmil`` with the discrete-time
  NLL; Harrell's and Uno's concordance, time-dependent AUC at 2 and 6 months (scikit-survival);
- proportion: ``abmil`` and ``wsseg`` trained on the true tumour fraction per slide (``--task
  proportion``): slide MAE and R², and the pooled instance AUC of their per-tile probabilities on the test
  slides, against the per-tile classifier of ``abmil`` trained binary (tumour vs normal) on the same
  slides in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mil_bench import DEFAULT_DATA, score_auc, tile, tile_truth  # noqa: E402

LAMBDA0 = 0.02  # baseline hazard per month
BETA = 10.0  # log hazard ratio per unit of tumour burden
CENSOR_MAX = 48.0  # months
TIMES = (2.0, 6.0)  # months, for the time-dependent AUC (about the median and third quartile of the event times)


def prepare(args: argparse.Namespace) -> tuple[Path, list[Any], Path]:
    """Compose, tile and extract (each step skips what is already on disk)."""
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.pseudoslides import PseudoSlideSpec, compose_pseudo_slides

    spec = PseudoSlideSpec(n_train=args.n_train, n_test=args.n_test, grid=tuple(args.grid), tumour_fraction=(0.05, 0.6),
                           positive_share=0.75, seed=args.cohort_seed)
    cohort = args.work / "cohort"
    slides = compose_pseudo_slides(args.data, cohort, spec)
    stores = tile(slides, args.work)
    enc = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=6, img_size=112)
    done = extract_features([stores[s.slide_id] for s in slides], enc, args.work, num_workers=1, progress=False)
    failed = [r for r in done if r.status == "failed"]
    if failed:
        raise SystemExit(f"extraction failed: {failed[0].error}")
    return cohort, slides, Path(done[0].store).parent


def survival_times(burden: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, event) per slide from its tumour burden, as the module docstring says."""
    times, events = [], []
    for k, f in enumerate(burden):
        rng = np.random.default_rng([seed, k])
        t_event = -np.log(rng.uniform()) / (LAMBDA0 * np.exp(BETA * f))
        t_censor = rng.uniform(0, CENSOR_MAX)
        times.append(min(t_event, t_censor))
        events.append(int(t_event <= t_censor))
    return np.round(np.array(times), 3), np.array(events)


def write_labels(cohort: Path, features: Path, seed: int) -> tuple[dict[str, Path], dict[str, float]]:
    """labels CSVs of the three tasks (binary, survival, proportion) and each slide's tumour burden."""
    with open(cohort / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    truth = tile_truth(features, [r["slide_id"] for r in rows], cohort / "ground_truth.csv")
    burden = {sid: float(t.mean()) for sid, t in truth.items()}
    t, e = survival_times(np.array([burden[r["slide_id"]] for r in rows]), seed)
    out = {}
    for task in ("binary", "survival", "proportion"):
        path = cohort / f"labels_{task}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["slide_id", "patient_id", "label", "time", "event", "split"] if task == "survival"
                       else ["slide_id", "patient_id", "label", "split"])
            for k, r in enumerate(rows):
                sid = r["slide_id"]
                if task == "survival":
                    w.writerow([sid, r["patient_id"], "", t[k], e[k], r["split"]])
                else:
                    label = r["label"] if task == "binary" else f"{burden[sid]:.6f}"
                    w.writerow([sid, r["patient_id"], label, r["split"]])
        out[task] = path
    return out, burden


def _run(head: str, task: str, labels: Path, features: Path, bank: Any, args: argparse.Namespace,
         **extra: Any) -> Any:
    from pathweak.train import TrainConfig, train_cohort

    cfg = TrainConfig(head=head, task=task, seeds=tuple(args.seeds), max_epochs=args.epochs, min_epochs=args.min_epochs,
                      patience=args.patience, lr=args.lr, bootstrap=args.bootstrap, device="cpu", **extra)
    name = f"{task}_{head}" + (f"_{extra['survival_loss']}" if "survival_loss" in extra else "")
    started = time.perf_counter()
    run = train_cohort([features], labels, args.work / "runs" / name, cfg, progress=False, bank=bank)
    return run, round(time.perf_counter() - started, 1)


def _summary(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for k in per_seed[0]:
        v = [r[k] for r in per_seed if k in r and not np.isnan(r[k])]
        if v:
            out[k] = {"mean": round(statistics.mean(v), 4), "std": round(statistics.stdev(v), 4) if len(v) > 1 else 0.0}
    return out


def instance_auc(run_dir: Path, seeds: list[int], bank: Any, truth: dict[str, np.ndarray], positive: int) -> list[float]:
    """Pooled AUC over the test slides' tiles of each seed's per-tile positive probability."""
    from pathweak.train import load_model

    out = []
    for seed in seeds:
        model = load_model(run_dir / "models" / f"seed{seed}_fold0")
        preds = {sid: model.predict(bank.bag(bank.index(sid)), bank.grid(bank.index(sid))) for sid in truth}
        out.append(score_auc(preds, truth, positive))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "clinical_bench")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    ap.add_argument("--prepare-only", action="store_true", help="compose, tile and extract, then stop")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--grid", nargs=2, type=int, default=[8, 16])
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--survival-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--min-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--runs", nargs="+", default=None, metavar="NAME",
                    help="only these runs, e.g. proportion_wsseg binary_abmil (default: all; names as in the JSON)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cohort, slides, features = prepare(args)
    prepared = round(time.perf_counter() - t0, 1)
    if args.prepare_only:
        print(json.dumps({"features": str(features), "slides": len(slides), "seconds": prepared}))
        return
    run_all(args, cohort, slides, features, prepared)


def run_all(args: argparse.Namespace, cohort: Path, slides: list[Any], features: Path, prepared: float) -> None:
    import torch

    from pathweak.features.bank import load_feature_bank
    from pathweak.train import read_labels
    from pathweak.train.survival import harrell_c

    t0 = time.perf_counter()
    labels, burden = write_labels(cohort, features, args.survival_seed)
    table = read_labels(labels["survival"], task="survival")
    test_ids = [s.slide_id for s in slides if s.split == "test"]
    truth = tile_truth(features, test_ids, cohort / "ground_truth.csv")
    bank = load_feature_bank([features], slide_ids=table.slide_ids, device="cpu", progress=False)
    test = np.array([table.slide_ids.index(s) for s in test_ids])
    oracle = harrell_c(table.times[test], table.events[test], np.array([burden[s] for s in test_ids]))
    result: dict[str, Any] = {
        "data": str(args.data),
        "cohort": {"train": len(slides) - len(test_ids), "test": len(test_ids), "grid": args.grid,
                   "tiles": int(sum(len(bank.bag(i)) for i in range(len(bank)))),
                   "positive_slides": sum(1 for s in slides if s.label == "tumour"),
                   "tumour_fraction_range": [round(min(v for v in burden.values() if v > 0), 4),
                                             round(max(burden.values()), 4)],
                   "encoder": features.name},
        "survival_model": {"hazard": "h(t|f) = LAMBDA0 * exp(BETA * f), f = tumour burden", "LAMBDA0": LAMBDA0,
                           "BETA": BETA, "censoring": f"Uniform(0, {CENSOR_MAX})", "seed": args.survival_seed,
                           "events": int(table.events.sum()), "censored": int(len(table) - table.events.sum()),
                           "test_events": int(table.events[test].sum()), "oracle_test_c_index": round(oracle, 4)},
        "training": {"seeds": args.seeds, "max_epochs": args.epochs, "min_epochs": args.min_epochs,
                     "patience": args.patience, "lr": args.lr, "val": "20% of the training patients"},
        "torch_threads": torch.get_num_threads(),
        "runs": {},
    }
    eval_times = TIMES
    runs = [("survival", "abmil", {"survival_loss": "cox", "eval_times": eval_times}),
            ("survival", "mean", {"survival_loss": "cox", "eval_times": eval_times}),
            ("survival", "abmil", {"survival_loss": "discrete", "eval_times": eval_times}),
            ("proportion", "abmil", {}), ("proportion", "wsseg", {}), ("binary", "abmil", {})]
    for task, head, extra in runs:
        name = f"{task}_{head}" + (f"_{extra['survival_loss']}" if "survival_loss" in extra else "")
        if args.runs and name not in args.runs:
            continue
        run, seconds = _run(head, task, labels[task], features, bank, args, **extra)
        per_seed = []
        for seed in args.seeds:
            m = {k: float(v) for k, v in run.summary["seeds"][str(seed)]["metrics"].items()}
            per_seed.append(m)
        if task in ("proportion", "binary"):
            positive = 0 if task == "proportion" else run.summary["classes"].index("tumour")
            for m, auc in zip(per_seed, instance_auc(run.out_dir, args.seeds, bank, truth, positive), strict=False):
                m["instance_auc"] = auc
        result["runs"][name] = {"summary": _summary(per_seed), "seeds": [{"seed": s, **{k: round(v, 4) for k, v in m.items()}}
                                                                         for s, m in zip(args.seeds, per_seed, strict=False)],
                                "ci95_seed0": run.summary["seeds"][str(args.seeds[0])]["ci95"], "train_seconds": seconds}
        print(name, result["runs"][name]["summary"], flush=True)
    result["seconds"] = {"prepare": prepared, "train_eval": round(time.perf_counter() - t0, 1)}
    result["targets"] = targets(result["runs"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.markdown:
        print(markdown(result))


def targets(runs: dict[str, Any]) -> dict[str, bool]:
    """The acceptance targets (means over seeds)."""

    def mean(r: str, k: str) -> float:
        return runs[r]["summary"].get(k, {}).get("mean", float("nan")) if r in runs else float("nan")

    survival = {
        "abmil_c_index>mean_c_index": mean("survival_abmil_cox", "c_index") > mean("survival_mean_cox", "c_index"),
        "abmil_c_index>=0.75": mean("survival_abmil_cox", "c_index") >= 0.75,
    } if "survival_abmil_cox" in runs and "survival_mean_cox" in runs else {}
    return {
        **survival,
        **{f"proportion_{h}_{k}": v for h in ("abmil", "wsseg") if f"proportion_{h}" in runs for k, v in (
            ("mae<=0.05", mean(f"proportion_{h}", "mae") <= 0.05),
            ("instance_auc>=0.90", mean(f"proportion_{h}", "instance_auc") >= 0.90),
            ("instance_auc>=binary_abmil", mean(f"proportion_{h}", "instance_auc") >= mean("binary_abmil", "instance_auc")))},
    }


def markdown(result: dict[str, Any]) -> str:
    """The docs tables: survival runs and proportion vs binary."""
    def cell(run: str, k: str) -> str:
        s = result["runs"][run]["summary"].get(k)
        return f"{s['mean']:.3f} ± {s['std']:.3f}" if s else "–"

    surv = [r for r in result["runs"] if r.startswith("survival_")]
    keys = [k for k in result["runs"][surv[0]]["summary"]] if surv else []
    lines = ["| run | " + " | ".join(keys) + " | train s |", "|---|" + "---|" * (len(keys) + 1)] if surv else []
    lines += [f"| {r} | " + " | ".join(cell(r, k) for k in keys) + f" | {result['runs'][r]['train_seconds']} |" for r in surv]
    lines += ["", "| run | slide MAE | slide R² | instance AUC (tile prob., pooled) | train s |", "|---|---|---|---|---|"]
    for r in [r for r in result["runs"] if r.startswith(("proportion_", "binary_"))]:
        lines.append(f"| {r} | {cell(r, 'mae')} | {cell(r, 'r2')} | {cell(r, 'instance_auc')} | {result['runs'][r]['train_seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
