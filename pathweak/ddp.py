"""Training on several devices: Lightning DDP, one process per device (``--devices N``): the process world
head training (:mod:`pathweak.train.fit`) and pretraining (:mod:`pathweak.ssl.train`) run in. It knows
nothing of either, so it sits on the ground floor.

:func:`~pathweak.train.fit.fit_distributed` spawns ``N`` processes (``torch.multiprocessing``, spawn: safe with
CUDA), once for every seed and fold of a run. Each takes its device first (:func:`~pathweak.devices.set_device`:
its CUDA context opens on its own GPU), sets the environment Lightning's DDP reads for processes it did not
create (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``) and runs
:func:`~pathweak.train.fit.fit_head` for each (seed, fold) itself: the Trainer gets
``strategy=DDPStrategy`` (gloo on CPU, NCCL on CUDA) with ``devices=N``. The bank reaches every process
through CPU shared memory (a CUDA bank is sent as a CPU copy: a CUDA tensor would be opened in every rank
on the GPU it lives on) and is copied once to each rank's GPU, so steps still move nothing between host
and device. Rank 0 reports epochs to the parent's progress bar through a queue.

Data: :class:`~pathweak.train.module.RankSampler` shuffles the training bags with the seed and epoch
and gives rank ``r`` every ``N``-th bag of that order, so a step of ``N`` processes with one bag each
sees exactly the bags one process sees with ``bags_per_step=N`` (DDP averages the gradients); the
loss curves agree (tests/train/test_devices_train.py). Every rank validates on all validation bags, so
early stopping and the best epoch are the same everywhere. Rank 0 hands the result back in a file.

Heads that keep per-tile state across epochs (``tracks_instances``, e.g. INS) train on one device.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from .cpus import threads_per_worker

_RANK: dict[str, Any] = {}  # inside a rank process: world size and device


def trainer_options(device: Any) -> dict[str, Any]:
    """Trainer arguments for the bank's device: one device, or (inside a rank) DDP over the world."""
    if not _RANK:
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        return {"accelerator": accelerator, "devices": [device.index or 0] if accelerator == "gpu" else 1}
    return {**rank_trainer_options(), "use_distributed_sampler": False}  # RankSampler shards the bags


def rank_trainer_options(find_unused_parameters: bool = True) -> dict[str, Any]:
    """Inside a rank: accelerator, devices (the world size) and the DDP strategy (gloo on CPU, NCCL on CUDA)
    for a Lightning Trainer joining the processes :func:`run_ranks` started."""
    from lightning.pytorch.strategies import DDPStrategy

    cuda = _RANK["device"].startswith("cuda")
    strategy = DDPStrategy(
        process_group_backend="nccl" if cuda else "gloo", find_unused_parameters=find_unused_parameters
    )
    return {"accelerator": "gpu" if cuda else "cpu", "devices": _RANK["world"], "strategy": strategy}


def in_rank() -> bool:
    """True inside a process started by :func:`run_ranks`."""
    return bool(_RANK)


def run_ranks(fn: Any, args: tuple, devices: list[str], on_message: Any = None) -> Any:
    """Run ``fn(*args)`` in one spawned process per device (a DDP world Lightning joins); returns rank 0's
    return value (handed back through a file). Tensors in ``args`` must be on the CPU (shared memory): a CUDA
    tensor would be opened in every rank on its own GPU before the rank takes its device. What rank 0 passes
    to :func:`send` reaches ``on_message`` here while the ranks run (progress)."""
    import torch
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue() if on_message is not None else None
    with tempfile.TemporaryDirectory(prefix="pathweak-ddp-") as tmp:
        result = Path(tmp) / "rank0.pt"
        world = mp.start_processes(
            _rank_main,
            args=(len(devices), _free_port(), devices, fn, args, str(result), queue),
            nprocs=len(devices),
            start_method="spawn",
            join=False,
        )
        while not world.join(timeout=0.2):
            _deliver(queue, on_message)
        _deliver(queue, on_message)
        return torch.load(result, map_location="cpu", weights_only=False)


def send(message: Any) -> None:
    """Inside rank 0 of :func:`run_ranks`: hand ``message`` to the parent's ``on_message`` (nothing elsewhere)."""
    queue = _RANK.get("queue")
    if queue is not None and _RANK.get("rank") == 0:
        queue.put(message)


def _deliver(queue: Any, on_message: Any) -> None:
    while queue is not None and not queue.empty():
        on_message(queue.get())


def _rank_main(
    rank: int, world: int, port: int, devices: list[str], fn: Any, args: tuple, result: str, queue: Any
) -> None:
    import torch

    from .devices import set_device

    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "NODE_RANK": "0",
            "GROUP_RANK": "0",
        }
    )
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME"):  # not a SLURM job step of its own
        os.environ.pop(key, None)
    _RANK.update(world=world, device=devices[rank], rank=rank, queue=queue)
    set_device(devices[rank])  # before anything touches CUDA: this rank's context opens on its own GPU
    if not devices[rank].startswith("cuda"):
        torch.set_num_threads(threads_per_worker(world))
    out = fn(*args)
    if rank == 0:
        torch.save(out, result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
