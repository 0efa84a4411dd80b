"""Executors that run one task function over many tasks: a local process pool (default) or Dask
distributed (a LocalCluster, or an existing cluster by scheduler address). Same task function, same
outputs; results stream back as tasks finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import ConfigError


class LocalExecutor:
    """A pool of worker processes on this machine (forkserver, like the tiler's); with ``devices``, one
    process per device, each owning its device (:meth:`on_devices`)."""

    name = "local"

    def __init__(self, workers: int = 2, devices: list[str] | None = None):
        from ..tiling.pool import pool_context

        self.devices = devices  # one worker process per device, pinned to it (features/devices.py)
        self.workers = len(devices) if devices else max(1, workers)
        self._pool: Any = None
        self._context = pool_context

    def on_devices(self, devices: list[str]) -> LocalExecutor:
        """An executor of one process per device in ``devices`` (each loads its own encoder once): the GPU
        stage runs there, and its processes end with :meth:`close`, freeing their GPU memory."""
        return LocalExecutor(devices=devices)

    def run(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[tuple[tuple, Any, BaseException | None]]:
        """Yield (task, result, error) as each ``fn(*task)`` finishes."""
        from concurrent.futures import ProcessPoolExecutor, as_completed

        tasks = list(tasks)
        if not tasks:
            return
        if self.workers == 1 and not self.devices:  # inline; a device's work always runs in its own process
            for task in tasks:
                try:
                    yield task, fn(*task), None
                except Exception as exc:
                    yield task, None, exc
            return
        if self._pool is None:
            from .._atomic import owner_args

            pin: tuple[Any, ...] = ()
            if self.devices:
                from ..features.devices import local_pool_initializer

                pin = local_pool_initializer(self.devices, self.workers, self._context())
            from ..cpus import threads_per_worker

            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=self._context(),
                initializer=_init_worker,
                initargs=(owner_args(), pin, threads_per_worker(self.workers)),
            )
        futures = {self._pool.submit(fn, *task): task for task in tasks}
        for fut in as_completed(futures):
            error = fut.exception()
            yield futures[fut], None if error else fut.result(), error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Dask distributed: a LocalCluster of ``workers`` processes, or the cluster at ``scheduler``."""

    name = "dask"

    def __init__(self, workers: int = 2, scheduler: str | None = None, devices: list[str] | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(
                "the Dask executor needs dask.distributed", fix='pip install "pathweak[distributed]"'
            ) from None
        if scheduler:
            self._cluster = None
            self.client = Client(scheduler)
        else:
            self._cluster = LocalCluster(
                n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
            )
            self.client = Client(self._cluster)
        if devices:
            from .dask_devices import DevicePlugin

            self.client.register_plugin(DevicePlugin(devices))

    def on_devices(self, devices: list[str]) -> DaskOnDevices:
        """The GPU stage's executor: its tasks on one worker per device in ``devices`` (workers are pinned by
        a worker plugin, worker k to device k mod n), so each GPU holds one encoder."""
        from ..features.devices import worker_report
        from .dask_devices import DevicePlugin

        self.client.register_plugin(DevicePlugin(devices))
        by_device: dict[str, str] = {}
        for address, (_, dev) in sorted(self.client.run(worker_report).items()):
            by_device.setdefault(dev, address)
        chosen = [by_device[d] for d in devices if d in by_device]
        if not chosen:
            raise ConfigError(f"no Dask worker took one of the devices {devices}", fix="start one worker per GPU")
        return DaskOnDevices(self, chosen)

    def run(
        self, fn: Callable[..., Any], tasks: Iterable[tuple], workers: list[str] | None = None
    ) -> Iterator[tuple[tuple, Any, BaseException | None]]:
        from distributed import as_completed

        tasks = list(tasks)
        futures = {self.client.submit(fn, *task, pure=False, workers=workers): task for task in tasks}
        for fut in as_completed(list(futures)):
            error = fut.exception()
            yield futures[fut], None if error else fut.result(), error

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


class DaskOnDevices:
    """The tasks of a GPU stage on the Dask workers that own a device (:meth:`DaskExecutor.on_devices`);
    closing it frees their encoders (the cluster stays)."""

    name = "dask"

    def __init__(self, parent: DaskExecutor, workers: list[str]):
        self.parent, self.workers = parent, workers

    def run(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[tuple[tuple, Any, BaseException | None]]:
        return self.parent.run(fn, tasks, workers=self.workers)

    def close(self) -> None:
        from ..encoders.cache import release_encoders

        self.parent.client.run(release_encoders, workers=self.workers)


def make_executor(kind: str = "local", workers: int = 2, scheduler: str | None = None) -> LocalExecutor | DaskExecutor:
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    raise ConfigError(f"unknown executor {kind!r}", fix="use --executor local or --executor dask")


def _init_worker(owner: tuple[str, int, int], pin: tuple[Any, ...], threads: int = 0) -> None:
    """Pool-worker initializer: end with the run that started it, use ``threads`` torch threads (the
    workers share the CPUs this process may use; an OMP_NUM_THREADS already set wins), and take its device
    when ``pin`` (an ``(initializer, initargs)`` pair from
    :func:`~pathweak.features.devices.local_pool_initializer`) is set."""
    import os

    from .._atomic import exit_with_owner

    exit_with_owner(*owner)
    if threads > 0:  # read by torch when it is first imported in this worker (the extract stage)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if pin:
        initializer, initargs = pin
        initializer(*initargs)
