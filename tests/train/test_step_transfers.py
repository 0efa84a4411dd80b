"""A training step moves nothing between host and device and never waits on a device value, for every
registered head with its default options and the default training settings (class weights on). Counted
without a GPU: the bank and the module live on the meta device (tensors with shapes and no data), and a
dispatch hook counts every op that copies between devices and every op that must read device data on the
host (``.item()``, ``int()``/``bool()`` of a tensor, and ops whose output size depends on the data, such
as ``nonzero`` and ``unique``). On the meta device such a read has no value to return, so the hook hands a
stand-in back and the step goes on. The same counts on CUDA are tests/test_gpu_transfers.py (gpu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pathweak.features.bank import load_feature_bank
from pathweak.heads import HEADS, create_head
from pathweak.train import TrainConfig, read_labels
from pathweak.train.fit import class_weights, head_outputs, training_targets
from pathweak.train.module import MILModule, bag_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# ops whose result the host must read from the device (a synchronisation on CUDA)
READS = {"_local_scalar_dense", "nonzero", "_unique", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


class StepCounter(TorchDispatchMode):
    """Counts, on the meta device: ops copying between devices (host<->device transfers) and ops that
    read device data on the host (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[str] = []
        self.reads: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        self.ops += 1
        masked = name.startswith("index") and any(t.dtype == torch.bool for t in tree_flatten(args[1:])[0]
                                                    if isinstance(t, torch.Tensor))  # x[mask]: its size is data
        if (name in READS or masked) and any(t.is_meta for t in tensors):
            self.reads.append(name)
            return stand_in(name, tensors[0])
        if name == "_to_copy" and tensors[0].is_meta and kwargs.get("device", tensors[0].device).type != "meta":
            self.copies.append(name)  # to the host (.cpu(), .tolist()): meta has no data to copy
            return torch.zeros(tensors[0].shape, dtype=kwargs.get("dtype") or tensors[0].dtype, device=kwargs["device"])
        out = func(*args, **kwargs)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if len({t.device.type for t in tensors + outs}) > 1:
            self.copies.append(name)
        return out


def stand_in(name: str, t: torch.Tensor):
    """A value for a read the meta device cannot answer (shapes kept plausible, so the step runs on)."""
    if name == "_local_scalar_dense":
        return False if t.dtype == torch.bool else 1 if not t.is_floating_point() else 0.5
    if name == "nonzero":
        return torch.empty((t.numel(), t.dim()), dtype=torch.long, device="meta")
    if name.startswith("index_put"):
        return t
    if name.startswith("index"):
        return torch.empty((1, *t.shape[1:]), dtype=t.dtype, device="meta")
    flat = t.reshape(-1)
    return flat, torch.empty_like(flat, dtype=torch.long), torch.empty_like(flat, dtype=torch.long)


def count_steps(mil_cohort, head_name: str, steps: int = 3, instance: bool = False) -> StepCounter:
    """``steps`` training steps of ``head_name`` (default options, default TrainConfig) on the meta device:
    fetching the batch (and handing it to the device, as Lightning does), the forward and loss, backward and the
    optimiser step. ``instance``: every training bag has two corrected tiles (docs/review.md)."""
    cfg = TrainConfig(head=head_name)
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    table = read_labels(mil_cohort["labels"], list(bank.slide_ids), cfg.task)
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=table.slide_ids, device="cpu", progress=False)
    rows = np.nonzero(np.asarray(table.split) == "train")[0]
    targets, _ = training_targets(table, rows)
    weights = class_weights(table, rows) if cfg.balance and table.classes is not None else None
    assert weights is not None  # the default settings weight the classes
    head = create_head(head_name, bank.embed_dim, head_outputs(table, cfg), **cfg.head_options)
    module = MILModule(head, table.task, weights, cfg.lr, cfg.weight_decay).to("meta").train()
    bank.to("meta")  # the bank and module where a GPU would hold them
    optimizer = module.configure_optimizers()
    labels = {int(i): (np.array([0, 1]), np.array([1, 0])) for i in rows} if instance else None
    loader = iter(bag_loader(bank, rows, targets, cfg.step_bags, shuffle=True, boxes=head.takes_box, instance=labels))
    counter = StepCounter()
    for k in range(steps):
        with counter:
            batch = move_data_to_device(next(loader), torch.device("meta"))  # as Lightning hands a batch over
            loss = module.training_step(batch, k)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert counter.ops > steps * 20  # the hook saw the steps' work
    return counter


@pytest.mark.parametrize("head_name", list(HEADS))
def test_a_training_step_moves_nothing_between_host_and_device(mil_cohort, head_name):
    counter = count_steps(mil_cohort, head_name)
    assert counter.copies == [] and counter.reads == [], (counter.copies, counter.reads)


@pytest.mark.parametrize("head_name", ["abmil", "ins", "wsseg"])
def test_a_step_with_corrected_tiles_moves_nothing_either(mil_cohort, head_name):
    counter = count_steps(mil_cohort, head_name, instance=True)
    assert counter.copies == [] and counter.reads == [], (counter.copies, counter.reads)


def test_the_counter_sees_a_per_step_copy_and_a_read(mil_cohort):
    """The control: a CPU tensor moved to the device in a step, and an ``int()`` of a device value, are seen."""
    counter = StepCounter()
    x = torch.empty(4, 3, device="meta")
    with counter:
        (x * torch.ones(3).to("meta")).sum()
        int(x.argmax())
        x[x > 0].sum()
    assert counter.copies == ["_to_copy"] and counter.reads == ["_local_scalar_dense", "index"]
