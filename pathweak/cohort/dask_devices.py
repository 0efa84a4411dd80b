"""A Dask worker plugin giving each worker of a cluster one device (one GPU per worker) for the extract
stage; imported only by the Dask executor (it needs ``distributed``)."""

from __future__ import annotations

import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from ..devices import ENV


class DevicePlugin(WorkerPlugin):
    """Worker k (its name's trailing number; a LocalCluster names workers 0..n-1) owns
    ``devices[k % len(devices)]``; the extract task reads it with
    :func:`~pathweak.devices.worker_device` (and takes it with :func:`~pathweak.devices.set_device`). Clusters whose workers each see only their own GPU
    (dask-cuda's ``CUDA_VISIBLE_DEVICES`` per worker) need no plugin: "auto" is then that GPU."""

    name = "pathweak-device"

    def __init__(self, devices: list[str]):
        self.devices = list(devices)

    def setup(self, worker: Any) -> None:
        try:
            k = int(str(worker.name).rsplit("-", 1)[-1])
        except ValueError:
            k = sum(map(ord, str(worker.name)))
        os.environ[ENV] = self.devices[k % len(self.devices)]

    def teardown(self, worker: Any) -> None:
        os.environ.pop(ENV, None)
