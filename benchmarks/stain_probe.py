"""What stain normalisation does to a linear probe on the shared labelled sets (three sources: LC25000 lung,
EBHI-Seg colon, GlaS colon). Prints JSON.

    python benchmarks/stain_probe.py [--encoder timm:vit_tiny_patch16_224] [--weights random] [--lc-every 2]
                                     [--out benchmarks/results/stain_probe.json]

Each set is one TileStore, as ``pathweak import-images`` makes it, so ``extract --stain-normalize`` estimates
each *source's* stain once (64 tiles) and maps it to one reference fitted on a sample of all three sets'
tiles (``pathweak stain fit``): source-level normalisation, which is what the extraction path does with a
cohort's slides. For each of none / macenko / reinhard / vahadane: (1) the probe of ssl_probe.py (class-balanced
logistic regression, 5-fold CV grouped by source photo or patient, 5 repeats) within each set, and (2) how well
the same probe tells the three sources apart (grouped the same way): colour is one of the cues that separate
sources, so normalising should make (2) harder. No pretrained pathology weights are on this machine: the
encoder defaults to a random-init ViT (its features still carry colour and texture statistics; the numbers are
about the normalisation, not about a good encoder). Reported whatever they are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from linear_probe import DEFAULT_DATA, load_tasks, probe  # noqa: E402

WORK = HERE / "_work" / "stain_probe"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--encoder", default="timm:vit_tiny_patch16_224")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--lc-every", type=int, default=2, help="keep every N-th LC25000 tile (time)")
    ap.add_argument("--methods", nargs="+", default=["none", "macenko", "reinhard", "vahadane"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from pathweak.encoders import create_encoder
    from pathweak.features import FeatureStore, extract_features
    from pathweak.features.stain import StainNormalization, fit_reference_from
    from pathweak.tiling.images import images_to_store

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tasks = load_tasks(args.data, WORK)
    if "lc25000_3class" in tasks and args.lc_every > 1:
        t = tasks["lc25000_3class"]
        keep = slice(None, None, args.lc_every)
        tasks["lc25000_3class"] = {**t, "files": t["files"][keep], "labels": t["labels"][keep], "groups": t["groups"][keep]}
    stores = {
        name: images_to_store(task["files"], WORK / "tiles" / f"{name}.zarr", 224, progress=False).path
        for name, task in tasks.items()
    }
    started = time.perf_counter()
    reference = fit_reference_from(list(stores.values()), n_tiles=256)
    ref_path = reference.save(WORK / "ref.json")
    encoder = create_encoder(args.encoder, args.weights)
    result: dict = {"encoder": f"{args.encoder} ({args.weights})", "sets": {n: len(t["files"]) for n, t in tasks.items()},
                    "reference": "256 tiles sampled over the three sets", "probe": {}, "source_probe": {}, "seconds": {}}  # fmt: skip
    for method in args.methods:
        t0 = time.perf_counter()
        stain = None if method == "none" else StainNormalization(method, reference, str(ref_path))
        res = extract_features(list(stores.values()), encoder, WORK / method, stain=stain, progress=False, num_workers=0)
        feats = {}
        for name, r in zip(stores, res, strict=True):
            assert r.status in ("extracted", "skipped"), r.error
            x = FeatureStore.open(r.store).features.astype(np.float32)
            task = tasks[name]
            if "image_of_tile" in task:  # GlaS: an image is the mean of its crops
                owner = task["image_of_tile"]
                x = np.stack([x[owner == i].mean(0) for i in range(len(task["labels"]))])
            feats[name] = x
            result["probe"].setdefault(name, {})[method] = probe(x, task["labels"], task["groups"])
        all_x = np.concatenate(list(feats.values()))
        sources = [n for n, x in feats.items() for _ in range(len(x))]
        groups = [f"{n}-{g}" for n in feats for g in tasks[n]["groups"]]
        result["source_probe"][method] = probe(all_x, sources, groups, repeats=2)
        result["seconds"][method] = round(time.perf_counter() - t0, 1)
        summary = {n: result["probe"][n][method]["balanced_accuracy"] for n in feats}
        print(method, json.dumps(summary), "sources:", result["source_probe"][method]["balanced_accuracy"], flush=True)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    for row in [*result["probe"].values(), result["source_probe"]]:
        for value in row.values():
            value.pop("folds", None)
            value.pop("auc_folds", None)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
