"""Self-supervised pretraining on real tiles: DINO and MAE learn, checkpoints resume, the encoder
round-trips through safetensors, ExPLoRA adapts with LoRA, RankMe and the augmentations behave."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SHARED, need_shared

from pathweak.encoders.base import IMAGENET_MEAN, IMAGENET_STD
from pathweak.ssl import SSLConfig, pretrain, rankme
from pathweak.ssl.augment import fourier_style_swap, hed_jitter
from pathweak.ssl.data import SSLViews, TileIndex
from pathweak.ssl.module import SSLModule

LC = SHARED / "labeled" / "lc25000_lung"


@pytest.fixture(scope="module")
def lc_store(tmp_path_factory):
    """64 real LC25000 tiles (all three classes) in a TileStore."""
    need_shared(LC)
    from pathweak.tiling.images import images_to_store, list_images

    files = list_images(LC)[::60][:64]
    return images_to_store(files, tmp_path_factory.mktemp("lc") / "lc.zarr", 112, progress=False).path


def tiny(method: str, **kw) -> SSLConfig:
    base = dict(depth=2, img_size=64, local_size=32, batch_size=8, rankme_samples=16, num_workers=0, max_epochs=1,
                samples_per_epoch=32, warmup_steps=2)
    base.update(kw)
    return SSLConfig.tiny(method, **base)


def fixed_batch(store, cfg: SSLConfig, n: int = 8) -> list[torch.Tensor]:
    torch.manual_seed(0)
    views = SSLViews(TileIndex([store]), cfg, np.arange(n), IMAGENET_MEAN, IMAGENET_STD)
    items = [views[i] for i in range(n)]
    return [torch.stack([it[v] for it in items]) for v in range(len(items[0]))]


def train_steps(module: SSLModule, batch: list[torch.Tensor], steps: int, ema: bool) -> list[float]:
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(steps):
        loss = module.ssl_loss(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema:
            module.update_teacher(step)
        losses.append(loss.item())
    return losses


def test_dino_student_learns_the_teacher_on_real_tiles(lc_store):
    torch.manual_seed(0)
    cfg = tiny("dino", center_momentum=1.0)  # a fixed teacher and centre: the student's target stays put
    module = SSLModule(cfg, total_steps=100)
    batch = fixed_batch(lc_store, cfg)
    with torch.no_grad():  # the loss can fall no lower than the teacher's entropy; the rest is KL(teacher || student)
        probs = [torch.softmax(module.teacher_head(module.teacher(v)) / cfg.teacher_temp, -1) for v in batch[:2]]
        entropy = float(sum(-(p * p.clamp_min(1e-12).log()).sum(-1).mean() for p in probs) / 2)
    losses = train_steps(module, batch, 12, ema=False)
    assert losses[-1] - entropy < 0.5 * (losses[0] - entropy), (entropy, losses)


def test_dino_teacher_follows_the_student(lc_store):
    torch.manual_seed(0)
    cfg = tiny("dino")
    module = SSLModule(cfg, total_steps=4)
    before = sum((t - s).abs().sum() for t, s in zip(module.teacher.parameters(), module.student.parameters(), strict=True))
    train_steps(module, fixed_batch(lc_store, cfg), 4, ema=True)
    moved = sum((t - s).abs().sum() for t, s in zip(module.teacher.parameters(), module.student.parameters(), strict=True))
    assert before == 0 and moved > 0  # the teacher starts as the student, then lags behind it
    assert all(not p.requires_grad for p in module.teacher.parameters())


def test_mae_loss_falls_on_real_tiles(lc_store):
    torch.manual_seed(0)
    cfg = tiny("mae")
    module = SSLModule(cfg, total_steps=100)
    losses = train_steps(module, fixed_batch(lc_store, cfg), 12, ema=False)
    assert losses[-1] < 0.7 * losses[0], losses


def test_pretrain_resumes_and_the_encoder_round_trips(lc_store, tmp_path):
    from pathweak.encoders import create_encoder

    out = tmp_path / "run"
    first = pretrain([lc_store], out, tiny("mae", max_epochs=1), progress=False)
    assert first.epochs == 1 and len(first.rankme) == 1 and (out / "checkpoints" / "last.ckpt").exists()
    second = pretrain([lc_store], out, tiny("mae", max_epochs=2), progress=False)
    assert second.steps == 2 * first.steps  # continued, not restarted
    assert [r["epoch"] for r in second.rankme] == [0, 1]
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["training"]["method"] == "mae" and meta["embed_dim"] == 192 and meta["img_size"] == 64
    assert meta["training"]["selected_by"].startswith("rankme")
    # the exported encoder equals the selected checkpoint's encoder
    enc = create_encoder(f"pathweak:{out}")
    module = SSLModule(tiny("mae"), total_steps=1)
    module.load_state_dict(torch.load(second.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x), module.encoder.eval()(x), atol=1e-5)


def test_explora_adaptation_trains_few_parameters_and_merges(lc_store, tmp_path):
    from pathweak.encoders import create_encoder

    base = tmp_path / "base"
    pretrain([lc_store], base, tiny("dino"), progress=False)
    adapted = tmp_path / "adapted"
    cfg = tiny("dino", adapt_from=str(base), unfreeze_last=1, lora_rank=4)
    pretrain([lc_store], adapted, cfg, progress=False)
    stats = json.loads((adapted / "encoder.json").read_text())["training"]["adapted"]
    assert 0 < stats["trainable"] < 0.6 * stats["total"]
    a, b = create_encoder(f"pathweak:{base}"), create_encoder(f"pathweak:{adapted}")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert a(x).shape == b(x).shape and not torch.allclose(a(x), b(x))


def test_lora_merge_is_exact():
    from pathweak.ssl.lora import LoRALinear

    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 8), rank=4)
    torch.nn.init.normal_(layer.lora_b)
    x = torch.randn(5, 16)
    assert torch.allclose(layer(x), layer.merged()(x), atol=1e-5)


def test_rankme_measures_effective_rank():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2000, 32, generator=g)
    low = torch.randn(2000, 1, generator=g) @ torch.randn(1, 32, generator=g)
    assert rankme(full) > 28 and rankme(low) < 1.5


def test_augmentations():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(hed_jitter(img, rng, 0.0), img)
    assert np.abs(hed_jitter(img, rng, 0.05).astype(int) - img).mean() > 0
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(fourier_style_swap(x, 0.0), x)
    y = fourier_style_swap(x, 1.0, torch.Generator().manual_seed(1))
    # phases kept, amplitudes taken from other images of the batch
    assert torch.allclose(torch.fft.fft2(y).angle()[..., 1:, 1:], torch.fft.fft2(x).angle()[..., 1:, 1:], atol=1e-3)
    amp_y = torch.fft.fft2(y).abs()
    amp_x = torch.fft.fft2(x).abs()
    assert all(any(torch.allclose(amp_y[i], amp_x[j], atol=1e-3) for j in range(4)) for i in range(4))


def test_cli_pretrain(lc_store, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pathweak_cli.main", "pretrain", "--stores", str(lc_store), "--out", str(tmp_path / "p"),
         "--method", "mae", "--tiny", "--epochs", "1", "--img-size", "64", "--batch-size", "8", "--workers", "0",
         "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["encoder"] == f"pathweak:{tmp_path / 'p'}"
    bad = subprocess.run([sys.executable, "-m", "pathweak_cli.main", "pretrain", "--stores", str(tmp_path / "none"),
                          "--out", str(tmp_path / "q")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no TileStore here" in bad.stderr and "Traceback" not in bad.stderr


def test_cpu_preset_is_a_small_fast_model_whose_mae_loss_falls(lc_store):
    """SSLConfig.cpu: 64 px, 4 blocks, 32 px local crops, 75 % masking, and it trains (real tiles)."""
    cfg = SSLConfig.cpu("dino", rankme_samples=16, num_workers=0)
    assert (cfg.img_size, cfg.depth, cfg.local_size, cfg.local_crops, cfg.arch) == (64, 4, 32, 2, "vit_tiny")
    views = fixed_batch(lc_store, cfg, n=2)
    assert [v.shape[-1] for v in views] == [64, 64, 32, 32]
    assert SSLConfig.cpu("mae", depth=3).depth == 3  # overrides win
    torch.manual_seed(0)
    mae = SSLConfig.cpu("mae", batch_size=8, num_workers=0)
    module = SSLModule(mae, total_steps=100)
    losses = train_steps(module, fixed_batch(lc_store, mae), 12, ema=False)
    assert losses[-1] < 0.7 * losses[0], losses


def test_select_last_exports_the_final_weights(lc_store, tmp_path):
    from pathweak.encoders import create_encoder

    out = tmp_path / "run"
    res = pretrain([lc_store], out, tiny("mae", max_epochs=2, select="last"), progress=False)
    meta = json.loads((out / "encoder.json").read_text())
    assert res.best_checkpoint is None and meta["training"]["selected_by"].startswith("last")
    module = SSLModule(tiny("mae"), total_steps=1)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == res.steps  # last.ckpt is the final epoch's, whatever RankMe did
    module.load_state_dict(last["state_dict"])
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(create_encoder(f"pathweak:{out}")(x), module.encoder.eval()(x), atol=1e-5)
    with pytest.raises(Exception, match="checkpoint selection"):
        SSLConfig(select="best")
