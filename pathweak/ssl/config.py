"""``SSLConfig``: every setting of a pretraining run (YAML presets in configs/ssl_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

ARCHS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}


@dataclass(frozen=True)
class SSLConfig:
    """Pretraining settings. Defaults follow DINO and MAE at small scale; ``tiny()`` trains in minutes
    on 2 CPU cores."""

    method: str = "dino"  # dino | mae
    arch: str = "vit_small"  # vit_tiny | vit_small | vit_base (timm ViTs, patch 16)
    depth: int | None = None  # override the number of transformer blocks (smaller CPU models)
    img_size: int = 224
    # optimisation
    batch_size: int = 64
    lr: float = 5e-4  # per 256 images
    weight_decay: float = 0.04
    warmup_steps: int = 100
    max_epochs: int = 100
    samples_per_epoch: int | None = None  # default: every tile once
    max_steps: int = -1
    max_minutes: float | None = None
    grad_clip: float = 3.0
    seed: int = 0
    # DINO
    out_dim: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    local_crops: int = 6
    local_size: int = 96
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    ema_momentum: float = 0.996
    # MAE (the medical-imaging recipe: high masking, milder crops)
    mask_ratio: float = 0.9
    mae_scale: tuple[float, float] = (0.5, 1.0)
    decoder_dim: int = 256
    decoder_depth: int = 4
    norm_pix_loss: bool = True
    # pathology augmentations
    hed_jitter: float = 0.05  # std of per-channel HED stain scaling (0 = off)
    color_jitter: float = 0.2  # brightness/contrast/saturation strength (0 = off)
    hue_jitter: float = 0.02
    blur_prob: float = 0.3
    fourier_style: float = 0.0  # probability of swapping amplitude spectra within a batch (0 = off)
    # RankMe and checkpoint selection
    rankme_samples: int = 512
    # adapting an existing encoder (ExPLoRA-style)
    adapt_from: str | None = None  # a pathweak encoder dir, or a timm state-dict file
    unfreeze_last: int = 1
    lora_rank: int = 8
    # hardware
    num_workers: int = 2
    devices: str | int = "auto"
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true on CPU

    def __post_init__(self) -> None:
        if self.method not in ("dino", "mae"):
            raise ConfigError(f"unknown SSL method {self.method!r}", fix="use --method dino or --method mae")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown architecture {self.arch!r}", fix=f"use one of {', '.join(ARCHS)}")
        if self.img_size % 16 or self.local_size % 16:
            raise ConfigError("image sizes must be multiples of the patch size 16", fix="e.g. --img-size 224 or 112")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")
        if self.batch_size < 2:
            raise ConfigError("batch size must be at least 2")

    @property
    def timm_model(self) -> str:
        return ARCHS[self.arch]

    @classmethod
    def tiny(cls, method: str = "dino", **overrides: object) -> SSLConfig:
        """A CPU-sized run: a 6-block ViT-Tiny at 112 px, small DINO head, few local crops."""
        base = dict(
            method=method, arch="vit_tiny", depth=6, img_size=112, local_size=48, local_crops=2, batch_size=32,
            out_dim=1024, head_hidden=512, head_bottleneck=128, decoder_dim=128, decoder_depth=2,
            warmup_steps=20, rankme_samples=256, num_workers=1, lr=1e-3,
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]
