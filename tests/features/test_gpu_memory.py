"""GPU memory in extraction, checked without a GPU: the adaptive sub-batch on an out-of-memory error (raised
as torch raises it) and the memory given back only once the failed forward's tensors are gone; the cohort
runner's plan of one extraction process (one encoder) per GPU, with the GPU memory per device of the
largest preset measured on the meta device; the caller's encoder left where it is (gpu)."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from pathweak import devices
from pathweak.features import extract as extract_module
from pathweak.features.devices import encoder_memory, gpu_memory_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB"


def tiny_encoder():
    from pathweak.encoders import create_encoder

    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=64)


class OutOfMemoryAbove:
    """A real encoder that runs out of memory (raised as torch raises it) on sub-batches of more than
    ``limit`` tiles, after allocating a tensor of the failed forward (which the error's traceback holds)."""

    def __init__(self, enc, limit: int):
        self.enc, self.limit = enc, limit
        self.scratch: list[weakref.ref] = []
        self.info, self.encoder_id, self.embed_dim = enc.info, enc.encoder_id, enc.embed_dim

    def embed(self, tiles):
        if len(tiles) > self.limit:
            activations = torch.empty(1 << 18)
            self.scratch.append(weakref.ref(activations))
            raise torch.OutOfMemoryError(OOM)
        return self.enc.embed(tiles)


def test_out_of_memory_halves_the_batch_and_frees_before_emptying_the_cache(monkeypatch):
    """The sub-batch halves until it fits (and stays so for this encoder and device); the allocator's cache
    is emptied after the except block, when the traceback, and the tensors it held, are gone (inside the
    block empty_cache frees nothing)."""
    enc = OutOfMemoryAbove(tiny_encoder(), limit=8)
    alive_at_empty: list[bool] = []
    monkeypatch.setattr(devices, "empty_cache", lambda dev: alive_at_empty.append(any(r() for r in enc.scratch)))
    monkeypatch.setattr(extract_module, "_SHRUNK", {})
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (40, 64, 64, 3), dtype=np.uint8))
    feats = extract_module._embed(enc, tiles, torch.device("cpu"), 32)
    assert feats.dtype == np.float16 and feats.shape == (40, enc.embed_dim)
    assert np.array_equal(feats, enc.enc.embed(tiles).to(torch.float16).numpy())
    assert alive_at_empty == [False, False]  # 32 -> 16 -> 8, each after the failed forward's tensors were freed
    assert extract_module._SHRUNK[(enc.encoder_id, "cpu")] == 8
    extract_module._embed(enc, tiles, torch.device("cpu"), 32)
    assert len(enc.scratch) == 2  # remembered: the next batch starts at 8


def test_out_of_memory_at_one_tile_is_raised():
    enc = OutOfMemoryAbove(tiny_encoder(), limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        extract_module._embed(enc, torch.zeros(4, 64, 64, 3, dtype=torch.uint8), torch.device("cpu"), 2)
    extract_module._SHRUNK.clear()


def largest_preset_on_meta():
    """h-optimus-0 (ViT-g/14, 1.1 B parameters, as gigapath and midnight: the largest presets) on the meta
    device: its real architecture, nothing allocated."""
    from pathweak.encoders.base import Encoder, EncoderInfo
    from pathweak.encoders.build import build_network, get_preset

    preset = get_preset("h-optimus-0")
    with torch.device("meta"):
        net = build_network(preset)
    info = EncoderInfo(preset.name, "h-optimus-0-meta", preset.embed_dim, preset.img_size, precision=preset.precision)
    return Encoder(net, info)


def cohort_spec(tmp_path: Path, **extract):
    from pathweak.cohort.spec import CohortSpec

    return CohortSpec(name="c", manifest=tmp_path / "m.csv", out=tmp_path, slides=(), extract=extract,
                      executor={"workers": 8})


def test_cohort_extraction_plans_one_encoder_per_gpu(tmp_path):
    """Eight cohort workers used to load eight encoders on cuda:0 (a ViT-g preset: ~98 GiB, more than an
    H100 holds); the extract stage now runs one process per GPU, so each GPU holds one encoder: ~12 GiB for
    the largest preset at the first sub-batch of 512 tiles (weights 4.2 GiB, bf16 copies 2.1 GiB, activations)."""
    from pathweak.cohort.runner import extract_devices

    assert extract_devices(cohort_spec(tmp_path), visible=1) == ["cuda:0"]
    assert extract_devices(cohort_spec(tmp_path, devices="all"), visible=2) == ["cuda:0", "cuda:1"]
    assert extract_devices(cohort_spec(tmp_path, device="cuda:1"), visible=2) == ["cuda:1"]
    assert extract_devices(cohort_spec(tmp_path), visible=0) is None  # the CPU: the pool's workers share the cores
    assert extract_devices(cohort_spec(tmp_path), visible=2, external=True) is None  # dask-cuda: a GPU per worker

    enc = largest_preset_on_meta()
    assert sum(p.numel() for p in enc.parameters()) > 1.1e9
    memory = encoder_memory(enc, batch=512)
    plan = gpu_memory_plan(extract_devices(cohort_spec(tmp_path), visible=1), memory)
    print("planned GPU memory per device:", plan)
    assert list(plan) == ["cuda:0"] and plan["cuda:0"]["processes"] == 1
    assert plan["cuda:0"]["weights_gib"] == pytest.approx(4.2, abs=0.1)
    assert plan["cuda:0"]["autocast_copies_gib"] == pytest.approx(2.1, abs=0.1)
    assert 1 < plan["cuda:0"]["activations_gib"] < 20 and plan["cuda:0"]["total_gib"] < 0.8 * 80
    eight = gpu_memory_plan(["cuda:0"] * 8, memory)  # the old layout: every worker's encoder on GPU 0
    assert eight["cuda:0"]["total_gib"] > 80


def test_the_memory_plan_measures_activations_on_the_meta_device():
    """Twice the batch, about twice the activations; weights do not change."""
    enc = largest_preset_on_meta()
    small, large = encoder_memory(enc, 32), encoder_memory(enc, 64)
    assert small.weights == large.weights and 1.8 < large.activations / small.activations < 2.2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_callers_encoder_stays_on_its_gpu():
    """extract_on_devices sends worker processes a CPU copy of an encoder on a GPU, not the encoder itself
    moved to the CPU (it moved the caller's model in place)."""
    from pathweak.features.devices import cpu_copy

    enc = tiny_encoder().cuda()
    copy = cpu_copy(enc)
    assert next(enc.parameters()).is_cuda and not next(copy.parameters()).is_cuda
    for a, b in zip(enc.state_dict().values(), copy.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b)
    assert cpu_copy(copy) is copy  # already on the CPU: sent as it is
