"""The CPUs a process may use (affinity mask, cgroup quota), and the thread counts set from them: one
torch thread for small MIL bags, and pool workers that share the CPUs instead of each taking them all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pathweak.cpus import SMALL_BAG, available_cpus, head_threads, quota_cpus, threads_per_worker


def _cgroup(tmp_path, proc_line: str, files: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(proc_line + "\n")
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root, proc


def test_cgroup_v2_quota_is_read_up_the_tree(tmp_path):
    root, proc = _cgroup(tmp_path, "0::/job/step", {"job/step/cpu.max": "max 100000\n", "job/cpu.max": "150000 100000\n"})
    assert quota_cpus(root, proc) == 1.5
    root, proc = _cgroup(tmp_path / "none", "0::/job", {"job/cpu.max": "max 100000\n"})
    assert quota_cpus(root, proc) is None


def test_cgroup_v1_quota(tmp_path):
    files = {"cpu,cpuacct/slurm/cpu.cfs_quota_us": "200000\n", "cpu,cpuacct/slurm/cpu.cfs_period_us": "100000\n"}
    root, proc = _cgroup(tmp_path, "4:cpu,cpuacct:/slurm", files)
    assert quota_cpus(root, proc) == 2.0
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    root, proc = _cgroup(tmp_path / "unlimited", "4:cpu,cpuacct:/", files)
    assert quota_cpus(root, proc) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_an_affinity_mask_limits_the_cpus_and_torch_follows(tmp_path):
    """A process pinned to one CPU (taskset, a Slurm allocation) counts one, whatever the machine has."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from pathweak.cpus import available_cpus, threads_per_worker; "
        "print(available_cpus(), threads_per_worker(2))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["1", "1"]
    assert available_cpus() == len(os.sched_getaffinity(0)) or quota_cpus() is not None


def test_small_bags_train_with_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert head_threads(100 * 192) == 1
    assert head_threads(SMALL_BAG * 4) == available_cpus()
    assert threads_per_worker(10_000) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's setting wins
    assert head_threads(100 * 192) == 3


def test_train_runs_small_bags_on_one_torch_thread_and_restores_the_count(mil_cohort, tmp_path, monkeypatch):
    """train_cohort on the CPU: the demo-sized bags (hundreds of tiles x a few hundred dims) train on one
    torch thread, so a busy machine cannot stall them on a descheduled second thread."""
    import torch

    from pathweak.train import TrainConfig, train_cohort

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen: list[int] = []
    from pathweak.train import module

    real = module.MILModule.training_step

    def spy(self, batch, batch_idx):  # records the thread count the real step runs with
        seen.append(torch.get_num_threads())
        return real(self, batch, batch_idx)

    before = torch.get_num_threads()
    module.MILModule.training_step = spy
    try:
        cfg = TrainConfig(head="abmil", seeds=(0,), max_epochs=1, min_epochs=1, patience=1, bootstrap=0, device="cpu")
        train_cohort([mil_cohort["features"]], mil_cohort["labels"], tmp_path / "run", cfg, progress=False)
    finally:
        module.MILModule.training_step = real
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_pool_workers_share_the_cpus(tmp_path):
    """Each of the cohort's worker processes gets its share of torch threads (an OMP_NUM_THREADS already
    set wins), so two workers on two CPUs do not run four threads."""
    from pathweak.cohort.executors import LocalExecutor

    pool = LocalExecutor(workers=2)
    env = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        results = [r for _, r, e in pool.run(_threads_here, [(), ()]) if e is None]
    finally:
        pool.close()
        if env is not None:
            os.environ["OMP_NUM_THREADS"] = env
    assert results and all(r == threads_per_worker(2) for r in results), results


def _threads_here() -> int:
    import torch

    return torch.get_num_threads()
