"""Executors that run one task function over many tasks: a local process pool (default) or Dask
distributed (a LocalCluster, or an existing cluster by scheduler address). Same task function, same
outputs; results stream back as tasks finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import ConfigError


class LocalExecutor:
    """A pool of worker processes on this machine (forkserver, like the tiler's)."""

    name = "local"

    def __init__(self, workers: int = 2, devices: list[str] | None = None):
        from ..tiling.tiler import _pool_context

        self.workers = max(1, workers)
        self.devices = devices  # each worker pinned to one of them (features/devices.py)
        self._pool: Any = None
        self._context = _pool_context

    def run(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[tuple[tuple, Any, BaseException | None]]:
        """Yield (task, result, error) as each ``fn(*task)`` finishes."""
        from concurrent.futures import ProcessPoolExecutor, as_completed

        tasks = list(tasks)
        if not tasks:
            return
        if self.workers == 1:
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
        if devices:  # one device per worker for the extract stage
            from .dask_devices import DevicePlugin

            self.client.register_plugin(DevicePlugin(devices))

    def run(self, fn: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[tuple[tuple, Any, BaseException | None]]:
        from distributed import as_completed

        tasks = list(tasks)
        futures = {self.client.submit(fn, *task, pure=False): task for task in tasks}
        for fut in as_completed(list(futures)):
            error = fut.exception()
            yield futures[fut], None if error else fut.result(), error

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(
    kind: str = "local", workers: int = 2, scheduler: str | None = None, devices: list[str] | None = None
) -> LocalExecutor | DaskExecutor:
    if kind == "local":
        return LocalExecutor(workers, devices)
    if kind == "dask":
        return DaskExecutor(workers, scheduler, devices)
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
