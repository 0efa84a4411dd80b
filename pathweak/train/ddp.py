"""Head training on several devices: Lightning DDP, one process per device (``--devices N``).

:func:`~pathweak.train.fit.fit_distributed` spawns ``N`` processes (``torch.multiprocessing``, spawn: safe with CUDA). Each
sets the environment Lightning's DDP reads for processes it did not create (``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``) and runs :func:`~pathweak.train.fit.fit_head` itself: the
Trainer gets ``strategy=DDPStrategy`` (gloo on CPU, NCCL on CUDA) with ``devices=N``. The bank
reaches every process without a copy on the CPU (shared memory) and is copied once to each rank's
GPU on CUDA, so steps still move nothing between host and device.

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

from ..cpus import threads_per_worker
from ..errors import ConfigError

_RANK: dict[str, Any] = {}  # inside a rank process: world size and device


def world_size(devices: str | int | None) -> int:
    """Processes for ``--devices`` (an integer, or "all": every CUDA device; 1 without CUDA)."""
    from ..features.devices import device_count

    return device_count(devices)


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


def rank_devices(world: int) -> list[str]:
    """One device per rank: the first ``world`` GPUs when CUDA is there, else ``world`` CPU processes."""
    import torch

    if not torch.cuda.is_available():
        return ["cpu"] * world
    if torch.cuda.device_count() < world:
        raise ConfigError(
            f"--devices {world} asks for more GPUs than the {torch.cuda.device_count()} present",
            fix=f"pass --devices {torch.cuda.device_count()}",
        )
    return [f"cuda:{r}" for r in range(world)]


def run_ranks(fn: Any, args: tuple, devices: list[str]) -> Any:
    """Run ``fn(*args)`` in one spawned process per device (a DDP world Lightning joins); returns rank 0's
    return value (handed back through a file)."""
    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="pathweak-ddp-") as tmp:
        result = Path(tmp) / "rank0.pt"
        mp.start_processes(
            _rank_main,
            args=(len(devices), _free_port(), devices, fn, args, str(result)),
            nprocs=len(devices),
            start_method="spawn",
            join=True,
        )
        return torch.load(result, map_location="cpu", weights_only=False)


def _rank_main(rank: int, world: int, port: int, devices: list[str], fn: Any, args: tuple, result: str) -> None:
    import torch

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
    _RANK.update(world=world, device=devices[rank], rank=rank)
    if devices[rank].startswith("cuda"):
        torch.cuda.set_device(torch.device(devices[rank]))
    else:
        torch.set_num_threads(threads_per_worker(world))
    out = fn(*args)
    if rank == 0:
        torch.save(out, result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
