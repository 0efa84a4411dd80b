"""Several devices: ``--devices N|all`` for extraction (one process per device) and for Lightning DDP.

Extraction shards slides over devices: a pool of one worker process per device (spawned, so CUDA is
initialised in the worker), each worker pinned to its device when it starts (``PATHWEAK_DEVICE``), and
slides handed to whichever worker is free (large slides first), so devices stay busy until the end.
On a machine without CUDA the workers are CPU processes sharing the cores (torch threads split
between them), which is how CI tests this path. The FeatureStores are the same as one process writes:
each slide is embedded whole by one worker, with the same code.

The cohort runner reuses the same pinning (``extract: {devices: N|all}``): ``worker_device()`` is the
device a worker was given (the local pool's initializer, or the Dask worker plugin in
``cohort/dask_devices.py``: one GPU per worker), else the configured one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cpus import threads_per_worker
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..protocols import ModuleEncoder

ENV = "PATHWEAK_DEVICE"  # set in a worker process: the device it owns


def device_count(devices: str | int | None) -> int:
    """Processes for ``--devices``: an integer >= 1, or "all" (every CUDA device; 1 without CUDA)."""
    import torch

    if devices is None:
        return 1
    if str(devices).strip().lower() == "all":
        return max(1, torch.cuda.device_count())
    try:
        n = int(devices)
    except ValueError:
        raise ConfigError(
            f"--devices {devices!r} is not a number or 'all'", fix="pass e.g. --devices 2 or --devices all"
        ) from None
    if n < 1:
        raise ConfigError(f"--devices must be at least 1, got {n}", fix="pass e.g. --devices 2")
    return n


def device_list(devices: str | int | None, device: str = "auto") -> list[str]:
    """One device name per process: ``cuda:0 .. cuda:N-1`` when the model runs on CUDA (``device`` auto
    with CUDA present, or cuda), else N times ``cpu``. More GPUs than present is an error."""
    import torch

    n = device_count(devices)
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not cuda:
        return ["cpu"] * n
    have = torch.cuda.device_count()
    if have == 0:
        raise ConfigError("no CUDA device is available", fix="pass --device cpu")
    if n > have:
        raise ConfigError(
            f"--devices {n} asks for more GPUs than the {have} present", fix=f"pass --devices {have} or all"
        )
    if ":" in device and n > 1:
        raise ConfigError(
            f"--device {device} names one GPU and --devices {n} asks for several",
            fix="pass --device cuda (or auto) with --devices",
        )
    if ":" in device:
        return [device]
    return [f"cuda:{i}" for i in range(n)]


def worker_device(default: str = "auto") -> str:
    """The device this process was pinned to (a device pool worker, a cohort worker), else ``default``."""
    return os.environ.get(ENV) or default


_WORKER: dict[str, Any] = {}  # in a device pool worker: the encoder it was given


def worker_report(delay: float = 0.0) -> tuple[int, str]:
    """(pid, device) of the process running it, after ``delay`` seconds: to check a pool's or a Dask
    cluster's device assignment (e.g. ``client.run(worker_report)``)."""
    import time

    time.sleep(delay)
    return os.getpid(), worker_device("unpinned")


def pin_worker(devices: Any, threads: int, encoder: tuple[str, str | None] | ModuleEncoder | None = None) -> None:
    """Pool initializer: take one device from the queue ``devices``, own it, and use ``threads`` torch
    threads; keep ``encoder`` (a name with its weights, or an Encoder) for the tasks."""
    import torch

    _WORKER["encoder"] = encoder
    dev = devices.get()
    os.environ[ENV] = dev
    if threads > 0:
        torch.set_num_threads(threads)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))


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
        encoder_id, spec = encoder.encoder_id, encoder.cpu()
    folder = (
        Path(out_dir) / "features" / (f"{encoder_id}-tokens{kwargs['tokens']}" if kwargs.get("tokens") else encoder_id)
    )
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


def _extract_in_worker(store: str | Path, out_dir: str | Path, kwargs: dict[str, Any]) -> Any:
    from ..cohort.encoders_cache import cached_encoder
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
    """Pool initializer of the cohort runner's workers: take one device name from the queue (no torch import:
    the same workers also tile)."""
    os.environ[ENV] = devices.get()


def local_pool_initializer(devs: list[str], workers: int, context: Any) -> tuple[Callable[..., None], tuple]:
    """(initializer, initargs) pinning each of ``workers`` local pool processes to one of ``devs`` (round
    robin), for the cohort runner's LocalExecutor."""
    queue = context.Queue()
    for k in range(workers):
        queue.put(devs[k % len(devs)])
    return pin_env, (queue,)
