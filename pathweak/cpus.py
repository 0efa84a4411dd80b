"""How many CPUs this process may really use, and torch's thread count set from it.

``os.cpu_count()`` counts the machine's CPUs, not the ones a process may run on: a job started with
``taskset``, a Slurm allocation (an affinity mask) or a container with a CPU quota (cgroup ``cpu.max``
or ``cpu.cfs_quota_us``) gets fewer. Every worker and thread count pathweak chooses by itself starts
from :func:`available_cpus`, so processes x threads never exceed what the process may use: on a shared
machine extra threads only queue behind each other (and torch's OpenMP threads wait for each other
at every parallel region, so one descheduled thread stalls them all).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where the platform has no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def quota_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (quota / period), None when there is none.

    cgroup v2: ``<root>/<path>/cpu.max`` ("max 100000" or "200000 100000"); cgroup v1:
    ``<root>/cpu,cpuacct/<path>/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (-1: none). The smallest
    quota on the way up to the root applies."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if controllers == "":  # cgroup v2 unified hierarchy
            quotas += [_v2_quota(folder) for folder in _up_to(root, path)]
        elif "cpu" in names:
            for mount in (",".join(names), "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                if (root / mount).is_dir():
                    quotas += [_v1_quota(folder) for folder in _up_to(root / mount, path)]
                    break
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (rounded up)."""
    cpus = affinity_cpus()
    quota = quota_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return cpus


def threads_per_worker(workers: int) -> int:
    """torch threads for each of ``workers`` processes sharing this process's CPUs (at least 1)."""
    return max(1, available_cpus() // max(1, workers))


SMALL_BAG = 1 << 20  # feature values per bag below which one torch thread trains and predicts a head fastest


def head_threads(values_per_bag: float) -> int:
    """torch threads for training or applying a MIL head on the CPU: one for small bags (fewer than
    :data:`SMALL_BAG` feature values each), where a second thread adds nothing but waiting for it (on a
    busy machine a descheduled thread stalls every parallel operation); else :func:`available_cpus`.
    OMP_NUM_THREADS, when set, wins."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return 1 if values_per_bag < SMALL_BAG else available_cpus()


def head_threads_on(device: Any, values_per_bag: float) -> AbstractContextManager[Any]:
    """torch's thread count while heads train or predict on ``device``: :func:`head_threads` on the CPU
    (one for small bags), unchanged on a GPU."""
    return torch_threads(head_threads(values_per_bag)) if getattr(device, "type", "cpu") == "cpu" else nullcontext()


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: :func:`available_cpus`); returns the count."""
    import torch

    n = max(1, int(threads or available_cpus()))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run a block with ``threads`` torch threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    n = set_torch_threads(threads)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _up_to(base: Path, path: str) -> list[Path]:
    """``base/path`` and each of its parents up to ``base``."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
