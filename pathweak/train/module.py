"""The Lightning side of training: bags fed from a FeatureBank, the module wrapping any registered head,
and the callbacks that keep the best epoch's weights and report progress.

A batch is a list of :class:`Bag` s taken straight from the bank (views of device memory for a resident
bank: no copy, no disk); each bag goes through the head on its own and the batch loss is the mean of the
heads' :meth:`~pathweak.heads.MILHead.loss`. Heads that keep per-tile state across epochs
(``tracks_instances``) also get the bank row as ``bag_id``. A training step moves nothing between host and
device: what a head reads on the host (its target, the grid's bounding box) comes with the bag from the
host, and the class weights live on the device with the module (tests/train/test_step_transfers.py counts).

Survival and proportion losses are functions of all the bags of a step at once (the Cox partial
likelihood compares each bag with the others at risk): the module stacks each bag's loss inputs (its
``streams``: the slide logits, plus DSMIL's max-instance logits, or the bag's mean tile probability) and
applies the task's loss to the stack; the validation loss is the same loss over all validation bags.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from ..devices import autocast_active, world_rank
from ..heads import HeadOutput, MILHead
from ..heads.base import GridBox
from .instance_labels import instance_label_loss
from .proportion import bag_proportion, proportion_loss
from .survival import cox_loss, discrete_nll

if TYPE_CHECKING:
    from ..protocols import Advance, BagSource

SET_TASKS = ("survival", "proportion")  # losses over the bags of a step, not per bag


class Bag(NamedTuple):
    """One bag of a batch: its features and grid (views of the bank), its target on the bank's device (for
    the loss) and as a Python number (``label``, for the head's own use: no tensor, so neither Lightning's
    batch transfer nor reading it touches the device), its bank row, its grid's box and its corrected tiles
    (``instance``: tile rows and class indices on the bank's device, or None; train/instance_labels.py)."""

    x: torch.Tensor
    grid: torch.Tensor
    target: torch.Tensor
    row: int
    label: Any
    box: GridBox | None = None
    instance: tuple[torch.Tensor, torch.Tensor] | None = None


class BagIndex(torch.utils.data.Dataset):
    """Positions into a bank with their targets (``targets`` on the host; a copy goes to the bank's device
    once); items are bags read from the bank. ``boxes``: each bag's grid box, found once here; ``instance``:
    bank row -> (tile rows, class indices) of the corrected tiles, copied to the bank's device once here."""

    def __init__(
        self,
        bank: BagSource,
        rows: np.ndarray,
        targets: torch.Tensor,
        boxes: bool = False,
        instance: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        self.bank, self.rows = bank, np.asarray(rows, np.int64)
        self.labels = targets.tolist()
        self.targets = targets.to(bank.device)  # once, so a step moves nothing to the device
        self.boxes = {int(i): bag_box(bank, int(i)) for i in self.rows} if boxes else {}
        self.instance = {
            int(i): (_on(instance[int(i)][0], bank.device), _on(instance[int(i)][1], bank.device))
            for i in self.rows
            if instance and int(i) in instance
        }

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> Bag:
        i = int(self.rows[j])
        return Bag(
            self.bank.bag(i),
            self.bank.grid(i),
            self.targets[i],
            i,
            self.labels[i],
            self.boxes.get(i),
            self.instance.get(i),
        )


def _on(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long).to(device)


def bag_box(bank: BagSource, i: int) -> GridBox:
    """Bag ``i``'s grid box: from the bank's host copy of the grid when it has one, else read once."""
    host = getattr(bank, "grid_box", None)
    return host(i) if host is not None else GridBox.of(bank.grid(i))


class RankSampler(torch.utils.data.Sampler[int]):
    """Bags in a shuffled order fixed by the seed; under DDP rank r takes every world-th bag of it (padded to
    a multiple of the world size), so N processes with one bag each per step see what one process sees with
    N bags per step (pathweak/ddp.py). The order is the one a shuffling DataLoader with a generator seeded
    with ``seed`` gives (per epoch: its workers' base-seed draw, then torch's RandomSampler permutation and
    its empty tail permutation), so single-device runs train on the same bag order as before DDP existed."""

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        world, rank = world_rank()
        g = self.generator
        torch.empty((), dtype=torch.int64).random_(generator=g)
        order = torch.randperm(self.n, generator=g).tolist()
        torch.randperm(self.n, generator=g)
        order += order[: -len(order) % world]  # pad so every rank takes as many steps
        return iter(order[rank::world])

    def __len__(self) -> int:
        world, _ = world_rank()
        return -(-self.n // world)


def bag_loader(
    bank: BagSource,
    rows: np.ndarray,
    targets: torch.Tensor,
    bags_per_step: int = 1,
    shuffle: bool = False,
    seed: int = 0,
    boxes: bool = False,
    instance: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> torch.utils.data.DataLoader:
    """Batches of ``bags_per_step`` bags (a list each), in the main process (the bank is already in memory);
    ``boxes``: with each bag's grid box (for heads that ``takes_box``); ``instance``: the corrected tiles of
    the bags that have some (LabelTable.instance_labels)."""
    sampler = RankSampler(len(rows), seed) if shuffle else None
    index = BagIndex(bank, rows, targets, boxes, instance)
    return torch.utils.data.DataLoader(index, batch_size=bags_per_step, sampler=sampler, collate_fn=list, num_workers=0)


def make_criterion(task: str, class_weights: torch.Tensor | None = None) -> Any:
    """Cross-entropy (optionally class-weighted: the weights must be on the logits' device) for
    classification, mean squared error for regression (on the standardised target)."""
    if task == "regression":
        return lambda logits, target: F.mse_loss(logits[:, 0].float(), target.float())

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long(), weight=class_weights)

    return ce


def head_input(x: torch.Tensor) -> torch.Tensor:
    """A bag as the head's input: as the bank holds it under autocast (a bfloat16 bank feeds bf16 autocast
    with no conversion; a float32 bank never converts), else float32 (a float16 bank on the CPU)."""
    if x.dtype == torch.float32 or autocast_active(x.device):
        return x
    return x.float()


class MILModule(L.LightningModule):
    """Trains ``head`` with AdamW on bags; logs ``train_loss`` and ``val_loss`` once per epoch. A bag with
    corrected tiles adds ``instance_weight`` x their cross-entropy (train/instance_labels.py) to its loss."""

    def __init__(
        self,
        head: MILHead,
        task: str,
        class_weights: torch.Tensor | None = None,
        lr: float = 2e-4,
        weight_decay: float = 1e-4,
        survival_loss: str = "cox",
        instance_weight: float = 1.0,
    ):
        super().__init__()
        self.instance_weight = instance_weight
        self.head = head
        self.task = task
        self.survival_loss = survival_loss
        self.class_weights: torch.Tensor | None  # a buffer: it moves to the device with the module, once
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float(), False)
        self.lr, self.weight_decay = lr, weight_decay
        self._train_losses: list[torch.Tensor] = []
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.history: list[dict[str, float]] = []

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss of per-bag logits (cross-entropy with the class weights, or MSE)."""
        weights = None if self.class_weights is None else self.class_weights.float()  # float32: no copy
        return make_criterion(self.task, weights)(logits, target)

    def streams(self, out: HeadOutput) -> list[torch.Tensor]:
        """What the set losses use of one bag's output (see the module docstring)."""
        if self.task == "proportion":
            return [bag_proportion(out.instance_logits)]
        return [out.logits.float()] + ([out.aux["max_logits"].float()] if "max_logits" in out.aux else [])

    def set_loss(self, streams: list[list[torch.Tensor]], y: torch.Tensor) -> torch.Tensor:
        """The task's loss over bags: ``streams[b][k]`` is stream k of bag b; streams are averaged. Survival
        targets are (time, event, time bin) rows; proportion targets the shares."""
        losses = []
        for k in range(len(streams[0])):
            stacked = torch.stack([s[k] for s in streams])
            if self.task == "proportion":
                losses.append(proportion_loss(stacked, y))
            elif self.survival_loss == "cox":
                losses.append(cox_loss(stacked[:, 0], y[:, 0], y[:, 1]))
            else:
                losses.append(discrete_nll(stacked, y[:, 2], y[:, 1]))
        return torch.stack(losses).mean() if len(losses) > 1 else losses[0]

    def forward_bag(self, bag: Bag, train: bool = True) -> HeadOutput:
        """The head on one bag: in training with its host-side target (and row, grid box) where the head uses them."""
        extra: dict[str, Any] = {}
        if self.head.takes_box and bag.box is not None:
            extra["box"] = bag.box
        if train and self.task not in SET_TASKS:
            if self.head.tracks_instances:
                extra["bag_id"] = bag.row
            if self.head.takes_instance_labels and bag.instance is not None:
                extra["instance_labels"] = bag.instance
            return self.head(head_input(bag.x), bag.grid, bag.label, **extra)
        return self.head(head_input(bag.x), bag.grid, **extra)

    def training_step(self, batch: list[Bag], batch_idx: int) -> torch.Tensor:
        if self.task in SET_TASKS:
            loss = self.set_loss(
                [self.streams(self.forward_bag(b)) for b in batch], torch.stack([b.target for b in batch])
            )
            self._train_losses.append(loss.detach())
            return loss
        losses = [self.bag_loss(b) for b in batch]
        loss = torch.stack(losses).mean() if len(losses) > 1 else losses[0]
        self._train_losses.append(loss.detach())
        return loss

    def bag_loss(self, bag: Bag) -> torch.Tensor:
        """The head's loss of one training bag, plus the instance-label loss of its corrected tiles."""
        out = self.forward_bag(bag)
        loss = self.head.loss(out, bag.target, self.criterion)
        if bag.instance is not None and self.instance_weight > 0:
            loss = loss + self.instance_weight * instance_label_loss(out.instance_logits, bag.instance)
        return loss

    def validation_step(self, batch: list[Bag], batch_idx: int) -> None:
        for b in batch:
            out = self.forward_bag(b, train=False)
            if self.task in SET_TASKS:
                self._val.append(([s.detach() for s in self.streams(out)], b.target))  # type: ignore[arg-type]
            else:
                self._val.append((out.logits.detach().float(), b.target))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        targets = torch.stack([v[1] for v in self._val])
        if self.task in SET_TASKS:
            val_loss = self.set_loss([v[0] for v in self._val], targets)  # type: ignore[misc]
        else:
            val_loss = self.criterion(torch.stack([v[0] for v in self._val]), targets)
        self._val.clear()
        self.log("val_loss", val_loss, prog_bar=False)
        train = torch.stack(self._train_losses).mean() if self._train_losses else torch.tensor(math.nan)
        if self.trainer.world_size > 1:  # DDP: the mean over every rank's bags (pathweak/ddp.py)
            train = self.trainer.strategy.reduce(train.to(self.device), reduce_op="mean")
        self._train_losses.clear()
        self.history.append({"epoch": int(self.current_epoch), "train_loss": float(train), "val_loss": float(val_loss)})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class KeepBest(L.Callback):
    """Keeps a CPU copy of the head's weights from the epoch with the lowest ``val_loss``, and stops early.

    Only epochs after the first ``min_epochs`` are candidates: on a small validation set an untrained
    model's loss can be the lowest by chance (one class only among a few validation slides), and a head
    kept from epoch 1 predicts nearly the same for every slide. ``patience`` (None: never stop early)
    counts epochs without a better candidate from the first candidate epoch, so it restarts there instead
    of running out while the early epochs cannot be kept."""

    def __init__(self, min_epochs: int = 0, patience: int | None = None) -> None:
        self.best = math.inf
        self.epoch = -1
        self.first = max(0, min_epochs - 1)  # the first epoch (0-based) whose weights may be kept
        self.patience = patience
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not isinstance(module, MILModule):
            raise TypeError(f"KeepBest keeps the weights of a MILModule's head, not of a {type(module).__name__}")
        epoch = int(module.current_epoch)
        if epoch < self.first:
            return
        value = trainer.callback_metrics.get("val_loss")
        if value is not None and torch.isfinite(value) and float(value) < self.best:
            self.best, self.epoch = float(value), epoch
            self.state = {k: v.detach().cpu().clone() for k, v in module.head.state_dict().items()}
        elif self.patience is not None and epoch - max(self.epoch, self.first) >= self.patience:
            trainer.should_stop = True

    def restore(self, module: MILModule) -> None:
        if self.state is not None:
            module.head.load_state_dict(copy.deepcopy(self.state))


class EpochProgress(L.Callback):
    """Advances a progress bar once per training epoch."""

    def __init__(self, advance: Advance):
        self.advance = advance

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.advance(1)
