"""Self-supervised label augmentation (SLA; Lee, Hwang & Shin, ICML 2020) around any head that can take it.

The features of each tile hold ``R`` views side by side (``pathweak extract --rotations R``: the tile's
embedding under rotations by 0, 90, ... degrees; a bag is (N, R * D)). The head named is built with
``C * R`` outputs, one per *joint* label (class ``c``, view ``r``) at index ``c * R + r``, and learns to tell
both: in training it sees each view of the bag on its own with the joint label (slide class, that view),
and its loss is the mean over the views. At prediction the class scores aggregate over the views (SLA's
aggregated inference): the logit of class ``c`` is the mean over ``r`` of the joint logit ``(c, r)`` the head
gives view ``r`` (slide logits, per-tile logits and per-class attention alike), so probabilities are the
softmax of those means. A head with a ``negative_class`` option (INS, WSSeg) sees, for view ``r``, the
joint negative ``(negative_class, r)``: INS's candidate labels of a tile are then {(negative, r), (class,
r)} and only the class part is a pseudo-label. Its per-tile ``mask`` thresholds the aggregated
probability of the non-negative classes, and INS's ``pseudo_label`` is the more probable of the negative
and the predicted class.

Built by :func:`~pathweak.heads.create_head` when the options hold ``label_augmentation={"kind": ...,
"views": R}`` (so a packaged model rebuilds it from model.json); the head's class decides whether it can
(``MILHead.label_augmentation``). The joint cross-entropy is unweighted: a bag's loss is one sample's, for
which class weights cancel anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from ..errors import ConfigError
from .base import Criterion, HeadOutput, MILHead, foreground_mask
from .registry import HEADS, WRAPPERS, create_head

VIEW_KINDS = {"rotation": (2, 4)}  # kinds of views and the view counts each allows


@dataclass
class ViewOutputs(HeadOutput):
    """A training output: the aggregated output plus the head's output on each view (for the joint loss)."""

    views: list[HeadOutput] = field(default_factory=list)


def joint_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The criterion of joint labels: cross-entropy over the ``C * R`` joint classes."""
    return F.cross_entropy(logits.float(), target.long())


class LabelAugmented(MILHead):
    """A head trained on joint (class x view) labels and aggregated over the views at prediction (SLA)."""

    def __init__(self, name: str, in_dim: int, n_outputs: int, augmentation: dict[str, Any], options: dict[str, Any]):
        kind, views = check_augmentation(augmentation)
        cls = HEADS.get(name)
        if not cls.label_augmentation:
            able = ", ".join(n for n in HEADS if HEADS.get(n).label_augmentation)
            raise ConfigError(
                f"the {name} head cannot train with label augmentation: its own loss terms read each output as a "
                "class (instance clustering), so the joint class x view labels would be taken for subtypes",
                fix=f"use one of {able}, or train without --label-augmentation",
            )
        if n_outputs < 2:
            raise ConfigError(
                "label augmentation trains a classifier on joint (class x view) labels; this task has no classes",
                fix="train a classification task (binary or multiclass), or drop --label-augmentation",
            )
        if in_dim % views:
            raise ConfigError(f"features of {in_dim} dimensions do not split into {views} views of equal width")
        inner = create_head(name, in_dim // views, n_outputs * views, **options)
        super().__init__(in_dim, n_outputs, **options, label_augmentation={"kind": kind, "views": views})
        self.name = name
        self.inner = inner
        self.views, self.dim = views, in_dim // views
        self.negative = inner.options.get("negative_class")  # the class index (None: the head has none)
        self.uses_grid, self.tracks_instances, self.takes_box = cls.uses_grid, cls.tracks_instances, cls.takes_box

    def forward(
        self, x: torch.Tensor, grid: torch.Tensor | None = None, target: Any = None, **extra: Any
    ) -> HeadOutput:
        outs = []
        for r in range(self.views):
            kw = dict(extra)
            if kw.get("bag_id") is not None:
                kw["bag_id"] = int(kw["bag_id"]) * self.views + r  # per-tile state of each view apart
            joint = None if target is None else int(target) * self.views + r
            with self._negative_of_view(r):
                outs.append(self.inner(x[:, r * self.dim : (r + 1) * self.dim], grid, joint, **kw))
        out = self._aggregate(outs)
        if target is not None:
            return ViewOutputs(out.logits, out.instance_logits, out.attention, views=outs)
        return out

    def loss(self, out: HeadOutput, target: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        """The mean over the views of the head's own loss on the joint label (class, view)."""
        if not isinstance(out, ViewOutputs) or not out.views:
            return super().loss(out, target, criterion)
        losses = []
        for r, view in enumerate(out.views):
            with self._negative_of_view(r):
                losses.append(self.inner.loss(view, target * self.views + r, joint_cross_entropy))
        return torch.stack(losses).mean()

    @contextmanager
    def _negative_of_view(self, r: int) -> Iterator[None]:
        """The inner head's negative class as the joint label (negative class, view ``r``) while it runs."""
        if self.negative is None:
            yield
            return
        self.inner.options["negative_class"] = self.negative * self.views + r
        try:
            yield
        finally:
            self.inner.options["negative_class"] = self.negative

    def _aggregate(self, outs: list[HeadOutput]) -> HeadOutput:
        """Class scores as the mean over views of each view's joint score (class, that view)."""
        c, v = self.n_outputs, self.views
        slide = torch.stack([o.logits.view(c, v)[:, r] for r, o in enumerate(outs)]).mean(0)
        inst = torch.stack([o.instance_logits.view(-1, c, v)[:, :, r] for r, o in enumerate(outs)]).mean(0)
        attention = None
        if all(o.attention is not None for o in outs):
            attns: list[torch.Tensor] = [o.attention for o in outs]  # type: ignore[misc]
            if attns[0].shape[1] == c * v:  # one attention branch per output: per class, as the logits
                attns = [a.view(-1, c, v)[:, :, r] for r, a in enumerate(attns)]
            attention = torch.stack(attns).mean(0)
        out = HeadOutput(slide, inst, attention)
        if not self.training and outs[0].tile_scores:
            out.tile_scores = self._tile_scores(slide, inst, outs[0].tile_scores)
        return out

    def _tile_scores(
        self, slide: torch.Tensor, inst: torch.Tensor, first: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The head's per-tile scores from the aggregated probabilities (``mask``, ``pseudo_label``)."""
        negative = int(self.negative or 0)
        predicted = int(slide.argmax())
        prob = torch.softmax(inst.float(), 1)
        scores: dict[str, torch.Tensor] = {}
        if "mask" in first:
            scores["mask"] = foreground_mask(
                1 - prob[:, negative], predicted != negative, self.inner.options["threshold"]
            )
        if "pseudo_label" in first:
            scores["pseudo_label"] = torch.where(
                prob[:, predicted] > prob[:, negative], float(predicted), float(negative)
            ).to(prob.dtype)
        return scores


def check_augmentation(augmentation: dict[str, Any]) -> tuple[str, int]:
    """(kind, views) of a ``label_augmentation`` option, or a clear error."""
    kind, views = augmentation.get("kind"), augmentation.get("views")
    if kind not in VIEW_KINDS:
        raise ConfigError(
            f"unknown label augmentation {kind!r}", fix=f"use --label-augmentation {' or '.join(VIEW_KINDS)}"
        )
    if views not in VIEW_KINDS[kind]:
        raise ConfigError(
            f"{kind} label augmentation takes {' or '.join(map(str, VIEW_KINDS[kind]))} views, got {views!r}",
            fix="extract with --rotations 4 (or 2)",
        )
    return str(kind), int(views)


WRAPPERS.register("label_augmentation")(LabelAugmented)
