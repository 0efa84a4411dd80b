"""Instance labels: a reviewer's per-tile corrections beside the slide labels (docs/review.md).

:class:`Corrections` is what a corrections reader hands to training: per slide, the FeatureStore rows of
the corrected tiles and the class name each was given, the files it came from (content hash, per-file
counts) and what could not be used (listed, never dropped silently). :func:`attach_instance_labels`
checks them against the label table — a class the model does not have is left out with a warning; a
tile corrected to a class that contradicts its slide's label is reported and the ``contradictions``
rule decides — and sets the table's ``instance_labels`` (bank row -> (tile rows, class indices)), which
training turns into a supervised instance loss (:func:`instance_label_loss`, weight
``TrainConfig.instance_weight``) beside the bag loss. Imports no torch at module level.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from .config import CONTRADICTIONS, TrainConfig

if TYPE_CHECKING:
    import torch

    from .labels import LabelTable
    from .splits import Fold


@dataclass
class SlideCorrections:
    """The corrected tiles of one slide: FeatureStore ``rows`` (int64) and the ``classes`` (names) given."""

    rows: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Corrections:
    """Per-tile corrections of a cohort, as read from QuPath GeoJSON exports or ground-truth CSVs.

    ``slides``: slide id -> :class:`SlideCorrections`; ``files``: one record per file read (path, slide,
    sha256, objects used and not used); ``sha256``: the hash of every file's content (what a cohort's
    train key holds); ``overlap``: the tile-overlap threshold used; ``warnings``: what was not used and
    why (files of no slide, objects outside the slide or on no tile, detections without pathweak's class
    measurement, conflicts)."""

    slides: dict[str, SlideCorrections]
    files: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""
    overlap: float = 0.5
    warnings: list[str] = field(default_factory=list)
    source: str = ""


def attach_instance_labels(table: LabelTable, corrections: Corrections, negative: int, rule: str) -> dict[str, Any]:
    """Set ``table.instance_labels`` from ``corrections`` and return their provenance for run.json.

    Class names match the table's classes exactly, else case-insensitively when that is unambiguous; a
    correction of another class is left out with a warning (in ``table.warnings``). A tile corrected to a
    class other than the negative class (index ``negative``) and other than its slide's label
    contradicts the slide label; ``rule`` decides: ``slide`` (the slide label wins, the correction is
    left out), ``tile`` (the correction is trained on as it is), ``error`` (refuse)."""
    if table.classes is None:
        raise ConfigError(
            f"instance labels need a classification task, not {table.task}",
            path=corrections.source or None,
            fix="train without --instance-labels, or with class labels",
        )
    if rule not in CONTRADICTIONS:
        raise ConfigError(f"unknown contradictions rule {rule!r}", fix=f"use one of {', '.join(CONTRADICTIONS)}")
    classes = table.classes
    index = {c: i for i, c in enumerate(classes)}
    folded: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        folded.setdefault(c.casefold(), []).append(i)
    row_of = {sid: i for i, sid in enumerate(table.slide_ids)}
    warnings = list(corrections.warnings)
    unknown: Counter[str] = Counter()
    unlabelled: dict[str, int] = {}
    found: list[dict[str, Any]] = []
    per_slide: dict[str, dict[str, int]] = {}
    attached: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for sid, sc in corrections.slides.items():
        if sid not in row_of:
            unlabelled[sid] = len(sc)
            continue
        bag = row_of[sid]
        label = int(table.targets[bag])
        keep_rows, keep_cls = [], []
        for r, name in zip(sc.rows.tolist(), sc.classes, strict=True):
            k = index.get(name)
            if k is None and len(folded.get(name.casefold(), [])) == 1:
                k = folded[name.casefold()][0]
            if k is None:
                unknown[name] += 1
                continue
            if k != negative and k != label:
                found.append({"slide": sid, "row": int(r), "tile_class": classes[k], "slide_label": classes[label]})
                if rule != "tile":
                    continue
            keep_rows.append(r)
            keep_cls.append(k)
        if keep_rows:
            attached[bag] = (np.asarray(keep_rows, np.int64), np.asarray(keep_cls, np.int64))
            per_slide[sid] = {classes[k]: int(n) for k, n in sorted(Counter(keep_cls).items())}
    where = corrections.source or "the instance labels"
    if found and rule == "error":
        first = found[0]
        raise ConfigError(
            f"{len(found)} corrected tile(s) contradict their slide's label (first: slide {first['slide']} is "
            f"labelled {first['slide_label']}, a tile was corrected to {first['tile_class']})",
            path=corrections.source or None,
            fix="check the slide label or the correction, or pass --contradictions slide|tile (docs/review.md)",
        )
    if found:
        outcome = "left out (the slide label wins)" if rule == "slide" else "trained on as corrected (rule: tile)"
        slides = sorted({f["slide"] for f in found})
        warnings.append(
            f"{where}: {len(found)} corrected tile(s) in {len(slides)} slide(s) contradict the slide label "
            f"({', '.join(slides[:5])}{' ...' if len(slides) > 5 else ''}): {outcome}"
        )
    if unknown:
        names = ", ".join(f"{n!r} ({c})" for n, c in unknown.most_common())
        warnings.append(
            f"{where}: corrections of classes the model does not have were left out: {names} "
            f"(the model's classes: {', '.join(classes)})"
        )
    if unlabelled:
        warnings.append(
            f"{where}: corrections of slides that are not in the labels were left out: "
            + ", ".join(f"{s} ({n})" for s, n in sorted(unlabelled.items())[:10])
        )
    if not attached:
        raise ConfigError(
            "no correction matches a labelled slide's tile with one of the model's classes"
            + (f" ({warnings[-1].split(': ', 1)[-1]})" if warnings else ""),
            path=corrections.source or None,
            fix="check the files' slide names and classes (docs/review.md)",
        )
    table.instance_labels = attached
    table.warnings.extend(warnings)
    totals: Counter[str] = Counter()
    for counts in per_slide.values():
        totals.update(counts)
    return {
        "source": corrections.source,
        "files": corrections.files,
        "sha256": corrections.sha256,
        "overlap": corrections.overlap,
        "contradictions": {"rule": rule, "tiles": found},
        "tiles": int(sum(totals.values())),
        "per_class": {c: int(totals[c]) for c in classes if totals[c]},
        "per_slide": per_slide,
        "left_out": {"unknown_classes": dict(unknown), "unlabelled_slides": unlabelled},
    }


def check_instance_label_options(cfg: TrainConfig) -> None:
    """Training settings that instance labels cannot join yet are one clear error (label augmentation: a
    corrected tile's class would need a joint class x rotation target)."""
    if cfg.label_augmentation:
        raise ConfigError(
            "instance labels do not combine with label augmentation yet (a corrected tile's class would need a "
            "joint class x rotation target)",
            fix="train with --instance-labels or with --label-augmentation, not both",
        )


def use_instance_labels(
    cfg: TrainConfig, table: LabelTable, folds: list[Fold], corrections: Corrections
) -> dict[str, Any]:
    """Attach ``corrections`` to ``table`` under ``cfg``'s rules; returns run.json's ``instance_labels`` record
    (with each fold's use of them). Label augmentation with corrections is one clear error."""
    check_instance_label_options(cfg)
    negative = int(cfg.head_options.get("negative_class", 0))
    record = attach_instance_labels(table, corrections, negative, cfg.contradictions)
    record["trained_on"] = fold_usage(table, folds)
    return record


def fold_usage(table: LabelTable, folds: list[Fold]) -> list[dict[str, int]]:
    """Per fold, the corrected tiles and slides its model trained on (its training rows only: corrections of
    its validation and test slides are not trained on)."""
    labels = table.instance_labels or {}
    out = []
    for f in folds:
        rows = [int(i) for i in f.train if int(i) in labels]
        out.append({"fold": f.index, "slides": len(rows), "tiles": int(sum(len(labels[i][0]) for i in rows))})
    return out


def instance_label_loss(instance_logits: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the corrected tiles' per-tile logits against their classes (mean over the tiles)."""
    from torch.nn import functional as F

    rows, classes = target
    return F.cross_entropy(instance_logits[rows].float(), classes)
