"""Extraction over several devices (features/devices.py): 2 worker processes write the same FeatureStores as
one process; --devices parsing and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LC25000, need_shared

from pathweak.devices import count_devices, device_list
from pathweak.errors import ConfigError
from pathweak.features import FeatureStore, extract_features
from pathweak.features.devices import extract_on_devices


def tiny_encoder():
    from pathweak.encoders import create_encoder

    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=112)


@pytest.fixture(scope="module")
def three_stores(tmp_path_factory):
    """Three TileStores of real LC25000 tiles (40, 24 and 12 tiles)."""
    need_shared(LC25000)
    from pathweak.tiling.images import images_to_store, list_images

    files = list_images(LC25000)
    out = tmp_path_factory.mktemp("devices") / "tiles"
    picks = [files[0:40], files[100:124], files[200:212]]
    return [images_to_store(f, out / f"s{i}.zarr", 224, progress=False).path for i, f in enumerate(picks)]


def test_two_processes_write_the_same_feature_stores_as_one(three_stores, tmp_path, one_torch_thread):
    enc = tiny_encoder()
    one = extract_features(three_stores, enc, tmp_path / "one", num_workers=0, device="cpu", progress=False)
    two = extract_on_devices(three_stores, enc, tmp_path / "two", devices=2, num_workers=0, device="cpu",
                             progress=False)
    assert [r.status for r in two] == ["extracted"] * 3, [r.error for r in two]
    assert [r.slide_id for r in two] == [r.slide_id for r in one]  # results in the order of the stores
    for a, b in zip(one, two, strict=True):
        fa, fb = FeatureStore.open(a.store), FeatureStore.open(b.store)
        assert fa.path.relative_to(tmp_path / "one") == fb.path.relative_to(tmp_path / "two")
        assert np.array_equal(fa.coords, fb.coords)
        assert np.allclose(fa.features.astype(np.float32), fb.features.astype(np.float32), atol=2e-3)
        assert fa.attrs["cache_key"] == fb.attrs["cache_key"]


def test_devices_option_values():
    assert count_devices(None) == 1 and count_devices("3") == 3
    assert count_devices("all") == max(1, torch.cuda.device_count())
    assert device_list(2, "cpu") == ["cpu", "cpu"]
    with pytest.raises(ConfigError, match="not a number or 'all'"):
        count_devices("many")
    with pytest.raises(ConfigError, match="at least 1"):
        count_devices(0)
    if not torch.cuda.is_available():
        assert device_list("all", "auto") == ["cpu"]
        with pytest.raises(ConfigError, match="no CUDA device"):
            device_list(2, "cuda")
    else:
        with pytest.raises(ConfigError, match="more GPUs"):
            device_list(torch.cuda.device_count() + 1, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_write_the_same_feature_stores_as_one(three_stores, tmp_path):
    one = extract_features(three_stores, "timm:vit_small_patch16_224", tmp_path / "one", weights="random",
                           device="cuda:0", progress=False)
    two = extract_on_devices(three_stores, "timm:vit_small_patch16_224", tmp_path / "two", devices=2, weights="random",
                             device="cuda", progress=False)
    for a, b in zip(one, two, strict=True):
        fa, fb = FeatureStore.open(a.store), FeatureStore.open(b.store)
        assert np.allclose(fa.features.astype(np.float32), fb.features.astype(np.float32), atol=5e-2)


def test_cohort_workers_are_pinned_one_device_each():
    """The cohort runner's local pool: each worker process owns one device of the list (round robin); the
    extract task reads it (names only here: pinning itself needs no GPU)."""
    from pathweak.cohort.executors import LocalExecutor
    from pathweak.features.devices import worker_report

    pool = LocalExecutor(2, devices=["cuda:0", "cuda:1"])
    try:
        seen = dict(res for _, res, err in pool.run(worker_report, [(0.5,)] * 4))
    finally:
        pool.close()
    assert len(seen) == 2 and sorted(seen.values()) == ["cuda:0", "cuda:1"]  # two processes, one device each


@pytest.mark.slow
def test_dask_workers_get_one_device_each():
    pytest.importorskip("distributed")
    from pathweak.cohort.executors import DaskExecutor
    from pathweak.features.devices import worker_report

    pool = DaskExecutor(2, devices=["cuda:0", "cuda:1"])
    try:
        per_worker = pool.client.run(worker_report)
    finally:
        pool.close()
    assert sorted(dev for _, dev in per_worker.values()) == ["cuda:0", "cuda:1"]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cohort_device_workers_own_their_gpu():
    """The extract stage's device pool: each process has its GPU as the current CUDA device (it used to get
    only PATHWEAK_DEVICE, so pinned memory opened a context on GPU 0 in every worker)."""
    from pathweak.cohort.executors import LocalExecutor
    from pathweak.features.devices import worker_cuda_device

    pool = LocalExecutor(2).on_devices(["cuda:0", "cuda:1"])
    try:
        seen = {res for _, res, err in pool.run(worker_cuda_device, [(0.5,)] * 4)}
    finally:
        pool.close()
    assert seen == {("cuda:0", 0), ("cuda:1", 1)}
