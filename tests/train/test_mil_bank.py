"""FeatureBank on a real-tile cohort: one contiguous tensor whose bags are the FeatureStores' rows, grid
positions on the slide grid, the memory estimate, the streaming fallback and the clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathweak.errors import MemoryBudgetError, StoreError
from pathweak.features import FeatureStore, find_feature_stores
from pathweak.features.bank import FeatureBank, StreamingFeatureBank, estimate_bank, grid_positions, load_feature_bank


def test_bank_holds_every_store_contiguously(mil_cohort):
    stores = [FeatureStore.open(p) for p in find_feature_stores([mil_cohort["features"]])]
    bank = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    assert isinstance(bank, FeatureBank) and bank.resident
    assert bank.features.dtype == torch.float16 and bank.features.is_contiguous()
    assert bank.n_tiles == sum(len(s) for s in stores) == bank.features.shape[0]
    assert bank.slide_ids == [s.slide_id for s in stores]
    base = bank.features.data_ptr()
    for i, s in enumerate(stores):
        bag = bank.bag(i)
        assert np.array_equal(bag.numpy(), s.features)  # float16 as stored, bit for bit
        assert bag.data_ptr() == base + int(bank.offsets[i]) * bank.embed_dim * 2  # a view, not a copy
        assert np.array_equal(bank.coords(i), s.coords)
        cells = {tuple(g) for g in bank.grid(i).tolist()}
        assert cells == {(r, c) for r in range(6) for c in range(6)}  # 6x6 pseudo-slides, every tile kept


def test_slide_selection_and_dtype(mil_cohort):
    ids = ["test_001", "train_000"]
    bank = load_feature_bank([mil_cohort["features"]], slide_ids=ids, dtype="bfloat16", device="cpu", progress=False)
    assert bank.slide_ids == ids and bank.features.dtype == torch.bfloat16
    store = FeatureStore.open(mil_cohort["features"] / "test_001.zarr")
    assert torch.allclose(bank.bag(0).float(), torch.from_numpy(store.features).float(), rtol=1e-2, atol=1e-2)
    with pytest.raises(StoreError, match="no FeatureStore for slide nope"):
        load_feature_bank([mil_cohort["features"]], slide_ids=["nope"], progress=False)


def test_a_cohort_that_does_not_fit_streams_or_fails_clearly(mil_cohort):
    stores = [FeatureStore.open(p) for p in find_feature_stores([mil_cohort["features"]])]
    est = estimate_bank(stores, torch.device("cpu"))
    assert est.needed_bytes == sum(len(s) for s in stores) * (stores[0].embed_dim * 2 + 8) and est.fits
    limit = est.needed_bytes - 1
    with pytest.raises(MemoryBudgetError) as err:
        load_feature_bank(stores, device="cpu", stream=False, memory_limit=limit, progress=False)
    text = str(err.value)
    assert "need" in text and "GiB" in text and "--stream" in text and "\n" not in text
    streamed = load_feature_bank(stores, device="cpu", stream="auto", memory_limit=limit, progress=False)
    resident = load_feature_bank(stores, device="cpu", progress=False)
    assert isinstance(streamed, StreamingFeatureBank) and not streamed.resident
    for i in range(len(resident)):
        assert torch.equal(streamed.bag(i), resident.bag(i))
        assert torch.equal(streamed.grid(i), resident.grid(i))


def test_features_folder_of_one_encoder_is_found(mil_cohort):
    parent = mil_cohort["features"].parent  # <root>/features holding one encoder folder
    assert find_feature_stores([parent]) == find_feature_stores([mil_cohort["features"]])


def test_grid_positions_follow_the_tile_step():
    coords = np.array([[1000, 500], [1224, 500], [1000, 948], [1672, 724]])
    assert grid_positions(coords).tolist() == [[0, 0], [0, 1], [2, 0], [1, 3]]
    assert grid_positions(np.array([[0, 0], [0, 224], [0, 448]])).tolist() == [[0, 0], [1, 0], [2, 0]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bank_on_cuda(mil_cohort):
    gpu = load_feature_bank([mil_cohort["features"]], device="cuda", dtype="bfloat16", progress=False)
    cpu = load_feature_bank([mil_cohort["features"]], device="cpu", progress=False)
    assert gpu.features.is_cuda and gpu.grid(0).is_cuda and gpu.features.dtype == torch.bfloat16
    for i in range(len(cpu)):
        assert torch.equal(gpu.bag(i).cpu(), cpu.bag(i).to(torch.bfloat16))
        assert torch.equal(gpu.grid(i).cpu(), cpu.grid(i))
    est = estimate_bank([FeatureStore.open(p) for p in gpu.paths], torch.device("cuda"))
    assert 0 < est.free_bytes and est.fits
