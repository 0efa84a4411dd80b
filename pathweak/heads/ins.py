"""INS-style instance learning on frozen tile features (after "Rethinking MIL for WSI classification: a
good instance classifier is all you need"): an instance classifier trained on prototype pseudo-labels,
with instance-level weakly supervised contrastive learning; the slide score pools the instance classifier.

Per training bag of class ``y`` (the candidate classes of its tiles are {negative class, y}; a negative
bag's tiles are always negative):

- two views of the tiles: the query branch (``fc`` → ``proj``) and a momentum (EMA) copy of it on the
  features with input dropout (the key branch);
- the classifier's prediction restricted to the candidates labels each tile; keys and these labels go
  into a queue, and the class prototypes move (moving average) towards the mean query of their tiles;
- the prototype pseudo-label of a tile is its most similar candidate prototype (a positive bag keeps at
  least its most likely tile positive); its soft pseudo-target moves towards that one-hot label by a
  moving average across epochs (``target_momentum``, per tile: the head keeps per-tile state and is
  given the bag's row, ``tracks_instances``);
- loss: cross-entropy of the instance classifier against the soft targets, a supervised contrastive
  loss of the queries against the keys and queue (positives share the label), ``bag_weight`` x the slide
  loss on the pooled instance logits, and optional early-learning regularisation (``elr`` > 0, Liu et al.
  2020: a term keeping predictions close to their own moving average, against noisy pseudo-labels).

The slide logits are the top-``topk`` mean of each class's instance logits (``topk=1``: max pooling).
A reviewer's corrected tiles (``instance_labels``, docs/review.md) override the pseudo-labels: their soft
targets and the labels their keys and prototypes use are the corrected classes.

At prediction the head also gives per tile ``pseudo_label`` (the nearest prototype among {negative,
predicted slide class}) and ``mask`` (positive-class probability thresholded, ``threshold``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .base import Criterion, HeadOutput, MILHead, check_threshold, foreground_mask, projection, register_head


def topk_pool(inst: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C) → (C,): the mean of the ``k`` highest values of each column (k=1: max)."""
    return inst.topk(min(k, inst.shape[0]), dim=0).values.mean(0)


@register_head("ins")
class INS(MILHead):
    """Instance classifier on prototype pseudo-labels with momentum contrastive learning (INS-style)."""

    tracks_instances = True
    takes_instance_labels = True
    prototypes: torch.Tensor  # buffers: (C, proj_dim) prototypes and their update counts (C,)
    proto_count: torch.Tensor
    queue: torch.Tensor  # (queue_size, proj_dim) keys and their labels (-1: empty slot)
    queue_labels: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        *,
        hidden: int = 256,
        proj_dim: int = 128,
        dropout: float = 0.25,
        feature_drop: float = 0.2,
        queue_size: int = 4096,
        temperature: float = 0.1,
        key_momentum: float = 0.99,
        proto_momentum: float = 0.9,
        target_momentum: float = 0.7,
        negative_class: int = 0,
        topk: int = 4,
        bag_weight: float = 1.0,
        contrast_weight: float = 0.5,
        elr: float = 0.0,
        elr_momentum: float = 0.7,
        threshold: float | str = 0.5,
    ):
        super().__init__(
            in_dim,
            n_outputs,
            hidden=hidden,
            proj_dim=proj_dim,
            dropout=dropout,
            feature_drop=feature_drop,
            queue_size=queue_size,
            temperature=temperature,
            key_momentum=key_momentum,
            proto_momentum=proto_momentum,
            target_momentum=target_momentum,
            negative_class=negative_class,
            topk=topk,
            bag_weight=bag_weight,
            contrast_weight=contrast_weight,
            elr=elr,
            elr_momentum=elr_momentum,
            threshold=threshold,
        )
        if n_outputs < 2 or not 0 <= negative_class < n_outputs:
            raise ConfigError(
                f"the ins head needs a classification task and a negative class index in [0, {n_outputs}); "
                f"got {n_outputs} outputs and negative_class={negative_class}"
            )
        check_threshold(threshold)
        self.fc = projection(in_dim, hidden, dropout)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, proj_dim))
        self.classifier = nn.Linear(hidden, n_outputs)
        self.momentum = copy.deepcopy(nn.ModuleDict({"fc": self.fc, "proj": self.proj})).requires_grad_(False)
        self.register_buffer("prototypes", torch.zeros(n_outputs, proj_dim))
        self.register_buffer("proto_count", torch.zeros(n_outputs))
        self.register_buffer("queue", torch.zeros(queue_size, proj_dim), persistent=False)
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long), persistent=False)
        self._queue_ptr = 0
        self._targets: dict[int, torch.Tensor] = {}  # bag_id -> (N, C) soft pseudo-targets (training state)
        self._elr_targets: dict[int, torch.Tensor] = {}

    def forward(
        self,
        x: torch.Tensor,
        grid: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        bag_id: int | None = None,
        instance_labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> HeadOutput:
        h = self.fc(x)
        inst = self.classifier(h)
        out = HeadOutput(topk_pool(inst, self.options["topk"]), inst)
        q = F.normalize(self.proj(h), dim=1)
        if self.training and target is not None:
            self._train_terms(out, x, q, int(target), bag_id, instance_labels)
        elif not self.training:
            predicted = int(out.logits.argmax())
            cand = self._candidates(predicted, x.device)
            sim = (q @ self.prototypes.T).masked_fill(~cand, -torch.inf)
            out.tile_scores["pseudo_label"] = sim.argmax(1).float()
            prob = torch.softmax(inst.float(), 1)
            out.tile_scores["mask"] = foreground_mask(
                1 - prob[:, self.options["negative_class"]],
                predicted != self.options["negative_class"],
                self.options["threshold"],
            )
        return out

    def loss(self, out: HeadOutput, target: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        bag = super().loss(out, target, criterion)
        if "instance_loss" not in out.aux:
            return bag
        o = self.options
        total = o["bag_weight"] * bag + out.aux["instance_loss"] + o["contrast_weight"] * out.aux["contrastive_loss"]
        return total + o["elr"] * out.aux["elr_loss"] if "elr_loss" in out.aux else total

    # -- training terms and state -------------------------------------------------------------------------

    def _candidates(self, label: int, device: torch.device) -> torch.Tensor:
        cand = torch.zeros(self.n_outputs, dtype=torch.bool, device=device)
        cand[self.options["negative_class"]] = True
        cand[label] = True
        return cand

    # The training terms are computed without asking the device anything (no .item(), no boolean-mask
    # indexing, no data-dependent branch): the bag's label comes from the host, the rest stays on the device.

    def _train_terms(
        self,
        out: HeadOutput,
        x: torch.Tensor,
        q: torch.Tensor,
        label: int,
        bag_id: int | None,
        corrected: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        neg, n = self.options["negative_class"], x.shape[0]
        cand = self._candidates(label, x.device)
        logp = torch.log_softmax(out.instance_logits.float(), 1)
        with torch.no_grad():
            self._momentum_update()
            xk = F.dropout(x, self.options["feature_drop"])
            k = F.normalize(self.momentum["proj"](self.momentum["fc"](xk)), dim=1)
            prob = logp.exp().masked_fill(~cand, 0)
            predicted = prob.argmax(1)  # the classifier's label among the candidates
            pseudo = self._prototype_labels(q.detach(), cand, predicted, prob, label)
            onehot = _one_hot(pseudo, self.n_outputs)
            if bag_id is None:
                soft = onehot
            else:
                old = self._targets.get(bag_id)
                if old is None or old.shape[0] != n:
                    old = cand.float().expand(n, -1) / cand.sum()
                m = self.options["target_momentum"]
                soft = self._targets[bag_id] = m * old + (1 - m) * onehot
            if label == neg:
                soft = _one_hot(torch.full((n,), neg, device=x.device), self.n_outputs)
            if corrected is not None:  # a reviewer's classes replace the pseudo-labels of those tiles
                rows, classes = corrected
                soft = soft.index_copy(0, rows, _one_hot(classes, self.n_outputs))
                predicted = predicted.index_copy(0, rows, classes)
                if bag_id is not None:
                    self._targets[bag_id] = soft
        out.aux["pseudo_targets"] = soft
        out.aux["instance_loss"] = -(soft * logp).sum(1).mean()
        out.aux["contrastive_loss"] = self._contrastive(q, k, predicted)
        if self.options["elr"] > 0 and bag_id is not None:
            p = logp.exp()
            with torch.no_grad():
                old = self._elr_targets.get(bag_id)
                m = self.options["elr_momentum"]
                t = p.detach() if old is None or old.shape != p.shape else m * old + (1 - m) * p.detach()
                self._elr_targets[bag_id] = t
            out.aux["elr_loss"] = torch.log((1 - (p * t / t.sum(1, keepdim=True)).sum(1)).clamp_min(1e-4)).mean()
        with torch.no_grad():
            self._update_prototypes(q.detach(), predicted, label)
            self._enqueue(k, predicted)

    def _prototype_labels(
        self, q: torch.Tensor, cand: torch.Tensor, predicted: torch.Tensor, prob: torch.Tensor, label: int
    ) -> torch.Tensor:
        """Nearest candidate prototype (the classifier's label while a prototype is still unset); a positive
        bag keeps its most likely tile positive."""
        nearest = (q @ self.prototypes.T).masked_fill(~cand, -torch.inf).argmax(1)
        unset = ((self.proto_count == 0) & cand).any()
        pseudo = torch.where(unset, predicted, nearest)
        if label != self.options["negative_class"]:
            top = prob[:, label].argmax().view(1)
            keep = torch.where((pseudo == label).any(), pseudo[top], torch.full_like(top, label))
            pseudo = pseudo.scatter(0, top, keep)
        return pseudo

    def _contrastive(self, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weakly supervised contrastive loss of the queries against this bag's keys and the queue's filled
        slots: minus the log of the softmax mass on the keys that share the query's label (zero when it all
        lies there). Empty slots are masked out rather than dropped, so the shapes never depend on the data."""
        keys = torch.cat([k, self.queue.to(k.dtype)])
        key_labels = torch.cat([labels, self.queue_labels])
        valid = torch.cat([torch.ones_like(labels, dtype=torch.bool), self.queue_labels >= 0])
        logits = (q @ keys.T.to(q.dtype)).float() / self.options["temperature"]
        logits = logits.masked_fill(~valid[None], -torch.inf)
        same = (labels[:, None] == key_labels[None]) & valid[None]
        return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~same, -torch.inf), 1)).mean()

    def _momentum_update(self) -> None:
        m = self.options["key_momentum"]
        query = [*self.fc.parameters(), *self.proj.parameters()]
        for pk, pq in zip(self.momentum.parameters(), query, strict=False):
            pk.mul_(m).add_(pq.detach(), alpha=1 - m)

    def _update_prototypes(self, q: torch.Tensor, labels: torch.Tensor, label: int) -> None:
        """Each candidate class's prototype moves towards the mean query of its tiles (set by the first)."""
        m = self.options["proto_momentum"]
        for c in dict.fromkeys((self.options["negative_class"], label)):
            sel = labels == c
            count = sel.sum()
            mean = (q.float() * sel[:, None]).sum(0) / count.clamp_min(1)
            new = torch.where(self.proto_count[c] == 0, mean, m * self.prototypes[c] + (1 - m) * mean)
            self.prototypes[c] = torch.where(count > 0, F.normalize(new, dim=0), self.prototypes[c])
            self.proto_count[c] += count

    def _enqueue(self, k: torch.Tensor, labels: torch.Tensor) -> None:
        size = self.queue.shape[0]
        k, labels = k[-size:], labels[-size:]
        idx = (torch.arange(len(k), device=k.device) + self._queue_ptr) % size
        self.queue[idx] = k.to(self.queue.dtype)
        self.queue_labels[idx] = labels
        self._queue_ptr = (self._queue_ptr + len(k)) % size


def _one_hot(index: torch.Tensor, classes: int) -> torch.Tensor:
    """(N,) class indices -> (N, classes) float one-hot, on their device (F.one_hot checks the values on the host
    on some devices)."""
    return torch.zeros(len(index), classes, device=index.device).scatter_(1, index[:, None], 1.0)
