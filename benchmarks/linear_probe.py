"""The labelled H&E tasks of ../shared/data/labeled and the linear probe that scores frozen features on them,
shared by the benchmarks that ask "are these features useful?" (ssl_probe.py, distill.py, sla_bench.py,
stain_probe.py, ins_e2e.py).

The folder layout is that of ../shared/data/labeled: lc25000_lung/ (groups.csv: file, label,
source_group_id), ebhi_seg/ (pairs.csv: image, mask, class, patient_id) and glas_colon/ (groups.csv:
file, label, source_group_id = patient). Probes use 5-fold cross-validation grouped by source photo
(LC25000) or patient (EBHI, GlaS), so no group is on both sides. GlaS images (775x522 at 0.62 um/px)
are cut into 224 px crops at native resolution (a grid covering the image, overlapping where the side
is not a multiple of 224); an image's feature is the mean of its crops' embeddings.
"""

from __future__ import annotations

import csv
import os
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
