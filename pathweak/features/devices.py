"""Several devices: ``--devices N|all`` for extraction (one process per device) and for Lightning DDP.

Extraction shards slides over devices: a pool of one worker process per device (spawned, so CUDA is
initialised in the worker), each worker pinned to its device when it starts (``PATHWEAK_DEVICE``), and
slides handed to whichever worker is free (large slides first), so devices stay busy until the end.
On a machine without CUDA the workers are CPU processes sharing the cores (torch threads split
between them), which is how CI tests this path. The FeatureStores are the same as one process writes:
each slide is embedded whole by one worker, with the same code.

The cohort runner's extract stage on CUDA runs the same way: one process (one encoder) per GPU, each
taking its GPU as the current CUDA device (:func:`~pathweak.devices.set_device`; the local pool's
initializer, or the Dask worker plugin in ``cohort/dask_devices.py``). :func:`encoder_memory` and
:func:`gpu_memory_plan` give the GPU memory such a process plans for, measured on the meta device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cpus import threads_per_worker
from ..devices import device_list, set_device, worker_device

if TYPE_CHECKING:
    from ..protocols import ModuleEncoder

_WORKER: dict[str, Any] = {}  # in a device pool worker: the encoder it was given


def worker_report(delay: float = 0.0) -> tuple[int, str]:
    """(pid, device) of the process running it, after ``delay`` seconds: to check a pool's or a Dask
    cluster's device assignment (e.g. ``client.run(worker_report)``)."""
    import time

    time.sleep(delay)
    return os.getpid(), worker_device("unpinned")


def worker_cuda_device(delay: float = 0.0) -> tuple[str, int | None]:
    """(device, current CUDA device index or None) of the process running it: a process pinned to a GPU
    must have that GPU current (``set_device``), else pinned memory and CUDA contexts land on GPU 0."""
    import time

    import torch

    time.sleep(delay)
    return worker_device("unpinned"), torch.cuda.current_device() if torch.cuda.is_available() else None


def pin_worker(devices: Any, threads: int, encoder: tuple[str, str | None] | ModuleEncoder | None = None) -> None:
    """Pool initializer: take one device from the queue ``devices``, own it, and use ``threads`` torch
    threads; keep ``encoder`` (a name with its weights, or an Encoder) for the tasks."""
    import torch

    _WORKER["encoder"] = encoder
    set_device(devices.get())
    if threads > 0:
        torch.set_num_threads(threads)


def device_pool(
    devs: list[str], context: Any = None, encoder: tuple[str, str | None] | ModuleEncoder | None = None
) -> Any:
    """A ProcessPoolExecutor with one worker per device in ``devs``, each pinned to its device (and
    holding ``encoder``, sent once per worker)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = context or mp.get_context("spawn")  # CUDA cannot be used in a forked child
    queue = ctx.Queue()
    for d in devs:
        queue.put(d)
    cpu_workers = sum(d == "cpu" for d in devs)
    threads = threads_per_worker(cpu_workers) if cpu_workers else 0
    return ProcessPoolExecutor(len(devs), mp_context=ctx, initializer=pin_worker, initargs=(queue, threads, encoder))


def extract_on_devices(
    stores: list[str | Path],
    encoder: str | ModuleEncoder,
    out_dir: str | Path,
    *,
    devices: str | int | None = "all",
    device: str = "auto",
    progress: bool = True,
    **kwargs: Any,
) -> list[Any]:
    """:func:`~pathweak.features.extract_features` with the slides sharded over ``devices`` (N or "all"),
    one worker process per device; results in the order of ``stores``. One device runs in this process.
    ``encoder`` is a name (each worker loads it, with ``weights``) or an Encoder (sent to each worker once)."""
    from concurrent.futures import as_completed

    from .._atomic import missing_dirs, remove_if_empty
    from ..progress import progress_bar
    from .extract import extract_features

    devs = device_list(devices, device)
    if len(devs) == 1 or len(stores) <= 1:
        return extract_features(
            stores, encoder, out_dir, device=devs[0] if devs[0] != "cpu" else device, progress=progress, **kwargs
        )
    from ..encoders import create_encoder

    weights = kwargs.pop("weights", None)
    if isinstance(encoder, str):
        encoder_id = create_encoder(encoder, weights).encoder_id  # fails here, once, on a bad name or weights
        spec: tuple[str, str | None] | ModuleEncoder = (encoder, weights)
    else:
        encoder_id, spec = encoder.encoder_id, cpu_copy(encoder)  # the caller's encoder stays on its device
    suffix = f"-tokens{kwargs['tokens']}" if kwargs.get("tokens") else ""
    suffix += f"-rot{kwargs['rotations']}" if kwargs.get("rotations", 1) > 1 else ""
    folder = Path(out_dir) / "features" / f"{encoder_id}{suffix}"
    created = missing_dirs(folder)  # made here, so no worker removes it while another writes into it
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(stores)), key=lambda i: -_size(stores[i]))  # large slides first
    results: list[Any] = [None] * len(stores)
    pool = device_pool(devs, encoder=spec)
    try:
        futures = {pool.submit(_extract_in_worker, stores[i], out_dir, kwargs): i for i in order}
        with progress_bar(len(stores), f"embedding on {len(devs)} devices", progress) as advance:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                advance(1)
    finally:
        pool.shutdown(cancel_futures=True)
        remove_if_empty(created)
    return results


def cpu_copy(module: Any) -> Any:
    """``module`` with its parameters and buffers on the CPU, for sending to worker processes: the module
    itself when it is there already, else a copy (the caller's module is not moved, and no second copy is
    made on its GPU)."""
    import copy

    import torch

    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device.type == "cpu" for t in tensors):
        return module
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().cpu(), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().cpu()
    return copy.deepcopy(module, memo)


def _extract_in_worker(store: str | Path, out_dir: str | Path, kwargs: dict[str, Any]) -> Any:
    from ..encoders.cache import cached_encoder
    from .extract import extract_features

    spec = _WORKER["encoder"]
    enc = cached_encoder(*spec) if isinstance(spec, tuple) else spec
    (result,) = extract_features([store], enc, out_dir, device=worker_device(), progress=False, **kwargs)
    result.exception = None  # may not pickle; the message is in result.error
    return result


def _size(store: str | Path) -> int:
    try:
        return sum(f.stat().st_size for f in Path(store, "tiles").rglob("*") if f.is_file())
    except OSError:
        return 0


def pin_env(devices: Any) -> None:
    """Pool initializer of the cohort runner's device workers: take one device from the queue and own it
    (:func:`~pathweak.devices.set_device`: pinned memory and a bare "cuda" then land on it, not on GPU 0)."""
    set_device(devices.get())


def local_pool_initializer(devs: list[str], workers: int, context: Any) -> tuple[Callable[..., None], tuple]:
    """(initializer, initargs) pinning each of ``workers`` local pool processes to one of ``devs`` (round
    robin), for the cohort runner's LocalExecutor."""
    queue = context.Queue()
    for k in range(workers):
        queue.put(devs[k % len(devs)])
    return pin_env, (queue,)


@dataclass(frozen=True)
class EncoderMemory:
    """What one extraction process holds on its GPU, in bytes: the encoder's weights, the low-precision
    copies autocast makes of them during a forward, and the peak of one batch's activations."""

    weights: int
    autocast_copies: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.autocast_copies + self.activations


def encoder_memory(encoder: Any, batch: int) -> EncoderMemory:
    """The GPU memory one process extracting with ``encoder`` (an :class:`~pathweak.encoders.Encoder`,
    best built on the meta device: nothing is allocated) plans for a sub-batch of ``batch`` tiles: its
    weights as held, the copies autocast makes of its floating-point weights on CUDA (in the dtype
    :func:`~pathweak.devices.autocast_dtype` picks for it), and the activations' peak, measured by running the
    forward on the meta device (in float32 there, scaled to the autocast dtype)."""
    import torch

    from ..devices import autocast_dtype

    dtype = autocast_dtype("cuda", encoder.info.precision)
    size = dtype.itemsize if dtype is not None else 4
    tensors = [*encoder.parameters(), *encoder.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    copies = sum(t.numel() * size for t in encoder.parameters() if t.is_floating_point()) if dtype is not None else 0
    side = int(encoder.info.img_size)
    shape = (batch, 3, side, side) if encoder.info.input != "volume" else (batch, 1, side, side, side)
    meta = encoder if all(t.is_meta for t in tensors) else copy_to_meta(encoder)
    with torch.no_grad(), _PeakBytes() as peak:
        meta.backbone(torch.empty(shape, device="meta"))
    return EncoderMemory(weights, copies, peak.peak * size // 4)


def gpu_memory_plan(process_devices: list[str], memory: EncoderMemory) -> dict[str, dict[str, float]]:
    """Per GPU: the extraction processes on it (each with its own encoder, ``process_devices`` naming one
    device per process) and the GiB they plan to use, from :func:`encoder_memory`."""
    gib = 2**30
    plan: dict[str, dict[str, float]] = {}
    for dev in process_devices:
        if not dev.startswith("cuda"):
            continue
        entry = plan.setdefault(dev, {"processes": 0})
        entry["processes"] += 1
        k = entry["processes"]
        entry.update(
            weights_gib=round(k * memory.weights / gib, 2),
            autocast_copies_gib=round(k * memory.autocast_copies / gib, 2),
            activations_gib=round(k * memory.activations / gib, 2),
            total_gib=round(k * memory.total / gib, 2),
        )
    return plan


def copy_to_meta(module: Any) -> Any:
    """A copy of ``module`` on the meta device (shapes only, nothing allocated)."""
    import copy

    import torch

    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


class _PeakBytes:
    """A dispatch mode that tracks the bytes of the storages ops create and the peak of those alive."""

    def __enter__(self) -> _PeakBytes:
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self
        self.live = self.peak = 0
        self._counts: dict[int, list[int]] = {}  # storage id -> [bytes, tensors alive]

        def freed(key: int) -> None:
            entry = tracker._counts[key]
            entry[1] -= 1
            if entry[1] == 0:
                tracker.live -= entry[0]
                del tracker._counts[key]

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if not hasattr(t, "untyped_storage"):
                        continue
                    key = t.untyped_storage()._cdata
                    entry = tracker._counts.get(key)
                    if entry is None:
                        entry = tracker._counts[key] = [t.untyped_storage().nbytes(), 0]
                        tracker.live += entry[0]
                        tracker.peak = max(tracker.peak, tracker.live)
                    entry[1] += 1
                    weakref.finalize(t, freed, key)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
