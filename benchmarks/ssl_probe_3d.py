"""Does 3D MAE pretraining on the user's own volumes learn useful features? Tile the real volumes of
../shared/data/volumes into 3D patches, pretrain pathweak's 3D ViT (``--method mae3d``) for a bounded CPU
budget, then probe patch-level tumour vs no tumour on the labelled brain MRI (pyradiomics brain1) with a
logistic regression on frozen features, against the same 3D ViT at random init and MONAI's 3D ResNet-10
at random init. Writes JSON.

    python benchmarks/ssl_probe_3d.py [--minutes 5] [--out benchmarks/results/ssl_probe_3d.json]

Labels: a patch is tumour when >= ``--tumour-fraction`` of its voxels are in the label map, no tumour when
none are; patches in between are left out of the probe. Split by volume region: patches are grouped by
the ``--block``-voxel cube their corner falls in, folds are grouped by block (5-fold, stratified), and
every training patch whose box overlaps a test patch's box is dropped from that fold's training set, so
no voxel is on both sides. Scores are pooled over the folds' out-of-fold predictions (AUC, balanced
accuracy). Pretraining is self-supervised (the label map is not read), on all the volumes including brain1.
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
DEFAULT_VOLUMES = Path(os.environ.get("PATHWEAK_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "volumes"


def tile_volumes(volumes: Path, work: Path, spacing: float, patch: int, overlap: int) -> tuple[list[Path], Path]:
    """3D patch stores of every 3D volume (the 4D series at timepoint 0; the single CT slice is too thin
    for cubes and left out); returns (all stores, the labelled brain1 store)."""
    from pathweak.config import StoreSpec, VolumeSpec
    from pathweak.volumes import tile_volume

    spec = VolumeSpec(spacing_mm=(spacing,) * 3, patch_px=patch, overlap_px=overlap, min_foreground=0.25)
    store = StoreSpec(shard_tiles=256)
    brain = tile_volume(volumes / "pyradiomics_brain1_image.nrrd", work / "brain", spec, store,
                        label=volumes / "pyradiomics_brain1_label.nrrd", progress=False).store
    others = [tile_volume(volumes / "nibabel_anatomical.nii", work / "others", spec, store, progress=False).store,
              tile_volume(volumes / "nibabel_example4d.nii.gz", work / "others", spec, store, timepoint=0,
                          progress=False).store]
    return [Path(brain), *map(Path, others)], Path(brain)


def embed(encoder, store: Path, rows: np.ndarray) -> np.ndarray:
    """Embeddings of the patches ``rows`` of ``store``."""
    import torch

    from pathweak.tiling import TileStore

    out = []
    with torch.no_grad(), TileStore.open(store) as s:
        for start in range(0, len(rows), 128):
            out.append(encoder.embed(torch.from_numpy(s.read_tiles(rows[start : start + 128]))).numpy())
    return np.concatenate(out)


def region_folds(coords: np.ndarray, y: np.ndarray, block: int, patch: int, seed: int = 0):
    """(train, test) index pairs: 5 folds grouped by ``block``-voxel region, train patches overlapping a
    test patch removed."""
    from sklearn.model_selection import StratifiedGroupKFold

    gid = np.unique(coords // block, axis=0, return_inverse=True)[1].reshape(-1)
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(coords, y, gid):
        keep = np.ones(len(train), bool)
        for chunk in range(0, len(test), 512):
            t = coords[test[chunk : chunk + 512]]
            overlap = (np.abs(coords[train][:, None, :] - t[None, :, :]) < patch).all(-1).any(1)
            keep &= ~overlap
        yield train[keep], test, int((~keep).sum())


def probe(features: np.ndarray, y: np.ndarray, coords: np.ndarray, block: int, patch: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.full(len(y), np.nan)
    dropped = []
    for train, test, n_dropped in region_folds(coords, y, block, patch):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1, class_weight="balanced"))
        clf.fit(features[train], y[train])
        scores[test] = clf.predict_proba(features[test])[:, 1]
        dropped.append(n_dropped)
    return {"auc": round(float(roc_auc_score(y, scores)), 4),
            "balanced_accuracy": round(float(balanced_accuracy_score(y, scores > 0.5)), 4),
            "train_patches_dropped_as_neighbours": dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=Path, default=DEFAULT_VOLUMES)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "ssl_probe_3d")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ssl_probe_3d.json")
    ap.add_argument("--minutes", type=float, default=5.0, help="pretraining budget (CPU minutes, wall clock)")
    ap.add_argument("--spacing", type=float, default=1.0, help="mm per voxel of the patches")
    ap.add_argument("--patch", type=int, default=16, help="patch side in voxels")
    ap.add_argument("--overlap", type=int, default=8, help="patch overlap in voxels")
    ap.add_argument("--block", type=int, default=32, help="side in voxels of the regions folds are grouped by")
    ap.add_argument("--tumour-fraction", type=float, default=0.1)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--max-negatives", type=int, default=1500,
                    help="probe at most this many no-tumour patches (a random sample; 0 = all) to bound CPU time")
    ap.add_argument("--reuse", action="store_true", help="reuse the encoder an earlier run pretrained in --work")
    ap.add_argument("--epoch-samples", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: fastest on a shared, oversubscribed CPU; see the result's 'threads')")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from pathweak.encoders import create_encoder
    from pathweak.encoders.base import Encoder, EncoderInfo
    from pathweak.encoders.vit3d import build_vit3d
    from pathweak.ssl import SSLConfig, pretrain
    from pathweak.tiling import TileStore

    t0 = time.perf_counter()
    stores, brain = tile_volumes(args.volumes, args.work, args.spacing, args.patch, args.overlap)
    counts = {p.stem: len(TileStore.open(p)) for p in stores}
    cfg = SSLConfig.tiny("mae3d", depth=args.depth, img_size=args.patch, patch_3d=4, batch_size=64, lr=1.5e-3,
                         max_epochs=1000, max_minutes=args.minutes, samples_per_epoch=args.epoch_samples,
                         rankme_samples=256, num_workers=1)
    out = args.work / "pretrain_mae3d"
    if args.reuse and (out / "encoder.json").exists():
        from pathweak.ssl.train import PretrainResult, _losses

        done = json.loads((out / "encoder.json").read_text())["training"]
        res = PretrainResult(str(out), str(out), done["steps"], done["epochs"], done["seconds"], done["best_checkpoint"],
                             done["rankme"], _losses(out))
    else:
        res = pretrain(stores, out, cfg, resume=False, progress=False)
    ranks = [r["rankme"] for r in res.rankme]
    meta = json.loads((out / "encoder.json").read_text())
    torch.manual_seed(0)
    random_vit = Encoder(build_vit3d(meta["vit3d"]), EncoderInfo(
        name="vit3d-random", encoder_id="vit3d-random0", embed_dim=meta["embed_dim"], img_size=args.patch,
        mean=(0.5,), std=(0.25,), input="volume")).eval()
    encoders = {"mae3d_vit": create_encoder(f"pathweak:{out}"), "random_init_vit": random_vit,
                "random_init_monai_resnet10": create_encoder("monai:resnet10", weights="random:0", img_size=args.patch)}

    with TileStore.open(brain) as s:
        frac, coords = s.label_fraction[:, 0], s.coords.astype(np.int64)
    tumour, clean = np.flatnonzero(frac >= args.tumour_fraction), np.flatnonzero(frac == 0)
    if args.max_negatives and len(clean) > args.max_negatives:
        clean = np.random.default_rng(0).choice(clean, args.max_negatives, replace=False)
    use = np.sort(np.concatenate([tumour, clean]))
    y = (frac[use] >= args.tumour_fraction).astype(int)
    result: dict = {
        "volumes": str(args.volumes), "patches": counts, "spacing_mm": args.spacing, "patch_voxels": args.patch,
        "overlap_voxels": args.overlap, "probe_patches": len(use), "no_tumour_sampled_from": int((frac == 0).sum()), "tumour_patches": int(y.sum()),
        "split": f"5 folds grouped by {args.block}^3-voxel region, overlapping train neighbours of test patches dropped",
        "budget_minutes": args.minutes, "threads": args.threads, "probe": {},
        "pretraining": {"steps": res.steps, "epochs": res.epochs, "seconds": round(res.seconds, 1),
                        "rankme": [round(r, 2) for r in ranks],
                        "rankme_rose": bool(len(ranks) >= 2 and max(ranks[1:]) > ranks[0]),
                        "loss_first_last": [round(float(np.mean(res.losses[:10])), 4),
                                            round(float(np.mean(res.losses[-10:])), 4)] if res.losses else None,
                        "model": {"arch": cfg.arch, "depth": cfg.depth, "cube": cfg.img_size, "patch_3d": cfg.patch_3d,
                                  "mask_ratio": cfg.mask_ratio, "parameters": sum(p.numel() for p in random_vit.parameters())}},
    }
    for name, enc in encoders.items():
        feats = embed(enc, brain, use)
        result["probe"][name] = probe(feats, y, coords[use], args.block, args.patch)
    p = result["probe"]
    result["gain_auc_vs_random_vit"] = round(p["mae3d_vit"]["auc"] - p["random_init_vit"]["auc"], 4)
    result["gain_auc_vs_random_resnet10"] = round(p["mae3d_vit"]["auc"] - p["random_init_monai_resnet10"]["auc"], 4)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = "python benchmarks/ssl_probe_3d.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
