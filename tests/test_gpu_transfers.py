"""Training from the FeatureBank copies nothing per step: a real dispatch hook counts every copy or dtype
conversion of the bank's storage and every host<->device transfer or device read inside training steps
(forward, backward and optimiser step). Runs on the CPU (bank copies and conversions) and on CUDA (gpu:
transfers and reads too, for every registered head with its default options and class weights, with the
profiler's memcpy events as a second count). Without a GPU the same counts run on the meta device
(tests/train/test_step_transfers.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pathweak._lightning import quiet_lightning
from pathweak.features.bank import load_feature_bank
from pathweak.heads import HEADS, create_head
from pathweak.train import read_labels
from pathweak.train.fit import class_weights, training_targets
from pathweak.train.module import MILModule, bag_loader

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:You defined a `validation_step`")]  # training steps only
COPIES = {"_to_copy", "copy_", "clone", "contiguous", "_copy_from", "_copy_from_and_resize"}
READS = {"_local_scalar_dense", "nonzero", "_unique", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


class TransferCounter(TorchDispatchMode):
    """Counts, while ``active``: ops copying or converting a tensor that lives in ``storage`` (the bank), and
    ops moving data between host and device (copies across devices, ``.item()`` of a device tensor)."""

    def __init__(self, storage: torch.UntypedStorage):
        super().__init__()
        self.ptr = storage.data_ptr()
        self.active = False
        self.bank_copies = 0
        self.transfers = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.active:
            self.ops += 1
            name = func.__name__.split(".")[0]
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if name in COPIES and any(t.untyped_storage().data_ptr() == self.ptr for t in tensors):
                self.bank_copies += 1
            outs = out if isinstance(out, (tuple, list)) else [out]
            devices = {t.device.type for t in [*tensors, *outs] if isinstance(t, torch.Tensor) and t.dim() > 0}
            if name in COPIES and len(devices) > 1 or name in READS and tensors[0].is_cuda:
                self.transfers += 1
        return out


class Window:
    """A Lightning callback switching the counter on for each training batch only (start to end: the
    forward, backward and optimiser step), so per-epoch work (validation, best-weights copies) is not counted."""

    def __init__(self, counter: TransferCounter):
        import lightning as L

        class _Cb(L.Callback):
            def on_train_batch_start(self, *a):
                counter.active = True

            def on_train_batch_end(self, *a):
                counter.active = False

        self.callback = _Cb()


def train_counting(features, labels, device: str, dtype: str, precision: str, steps_epochs: int = 2,
                   head: str = "abmil", weighted: bool = False):
    import lightning as L

    bank = load_feature_bank([features], device=device, dtype=dtype, progress=False)
    table = read_labels(labels, list(bank.slide_ids))
    bank = load_feature_bank([features], slide_ids=table.slide_ids, device=device, dtype=dtype, progress=False)
    rows = np.arange(len(bank))
    targets, _ = training_targets(table, rows)
    mil_head = create_head(head, bank.embed_dim, table.n_outputs)
    module = MILModule(mil_head, table.task, class_weights(table, rows) if weighted else None)
    counter = TransferCounter(bank.features.untyped_storage())
    with quiet_lightning():
        trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                            max_epochs=steps_epochs, callbacks=[Window(counter).callback], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0)
    with quiet_lightning(), counter:
        trainer.fit(module, bag_loader(bank, rows, targets, shuffle=True, boxes=mil_head.takes_box))
    steps = int(trainer.global_step)
    assert steps == steps_epochs * len(rows) and counter.ops > steps * 20  # the hook saw the steps' work
    return counter, steps


@pytest.mark.parametrize(("dtype", "precision"), [("float32", "32-true"), ("bfloat16", "bf16-mixed")])
def test_no_per_step_copies_of_the_bank_on_cpu(mil_cohort, dtype, precision):
    counter, _ = train_counting(mil_cohort["features"], mil_cohort["labels"], "cpu", dtype, precision)
    assert counter.bank_copies == 0 and counter.transfers == 0


def test_the_counter_sees_a_per_step_conversion(mil_cohort):
    """The control: a float16 bank trained in fp32 on the CPU converts each bag once per step, and the
    counter sees every one of those conversions."""
    counter, steps = train_counting(mil_cohort["features"], mil_cohort["labels"], "cpu", "float16", "32-true")
    assert counter.bank_copies == steps


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("head", list(HEADS))
def test_no_host_device_copies_per_step_on_cuda(mil_cohort, head):
    """Every head with its default options and class weights (the default training settings)."""
    counter, steps = train_counting(mil_cohort["features"], mil_cohort["labels"], "cuda", "bfloat16", "bf16-mixed",
                                    head=head, weighted=True)
    assert counter.bank_copies == 0 and counter.transfers == 0, (counter.bank_copies, counter.transfers, steps)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_profiler_sees_no_memcpy_per_step_on_cuda(mil_cohort):
    """The same with the profiler: memcpy HtoD/DtoH events grow by the epoch, not by the step."""
    from torch.profiler import ProfilerActivity, profile

    def memcpys(epochs: int) -> int:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            train_counting(mil_cohort["features"], mil_cohort["labels"], "cuda", "bfloat16", "bf16-mixed", epochs)
        names = [e.name for e in prof.events()]
        return sum(("HtoD" in n or "DtoH" in n) and "Memcpy" in n for n in names)

    one, three = memcpys(1), memcpys(3)
    n_slides = len(load_feature_bank([mil_cohort["features"]], device="cpu", progress=False))
    assert three - one < 2 * n_slides  # two more epochs add far fewer copies than one per step
