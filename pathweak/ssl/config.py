"""``SSLConfig``: every setting of a pretraining run (YAML presets in configs/ssl_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from ..encoders.archs import ARCH_DIMS, ARCHS
from ..errors import ConfigError

__all__ = ["ARCHS", "ARCH_DIMS", "DISTILL_LOSSES", "SSLConfig"]
DISTILL_LOSSES = ("standardized", "cosine")


@dataclass(frozen=True)
class SSLConfig:
    """Pretraining settings. Defaults follow DINO and MAE at small scale; ``tiny()`` trains in minutes
    on 2 CPU cores."""

    method: str = "dino"  # dino | mae | mae3d (3D patches of volumes) | distill (see pathweak.ssl.distill)
    arch: str = "vit_small"  # vit_tiny | vit_small | vit_base (timm ViTs, patch 16)
    depth: int | None = None  # override the number of transformer blocks (smaller CPU models)
    embed_dim: int | None = None  # override the token width (e.g. a student narrower than ViT-Tiny); 2D only
    num_heads: int | None = None  # override the attention heads (default: the arch's, 3/6/12); 2D only
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
    max_cpu_minutes: float | None = None  # stop after this much CPU time of the training process (a budget a shared
    # machine does not skew; loader worker processes are not counted, so use num_workers 0 for an exact one)
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
    # MAE3D: a 3D ViT on the (D, H, W) patches of volume stores; img_size is then the cube side
    patch_3d: int = 4  # voxels per side of one token's cube
    volume_intensity_jitter: float = 0.05  # std of the intensity scale and shift of 3D views (0 = off)
    # unified 2D/3D MAE (Uni4Eye): --method mae on 2D TileStores and 3D patch stores together trains one ViT
    # with a 2D and a 3D patch embedding (set by pretrain when the stores hold both kinds; ssl/mixed.py)
    unified: bool = False
    volume_img_size: int = 16  # the 3D branch's cube side (a multiple of patch_3d)
    volume_share: float | None = None  # share of each epoch's batches that are 3D (None: the 3D tiles' share)
    # distillation (pathweak distill): the student (arch/depth/img_size) learns the teacher's embedding
    teacher: str | None = None  # an encoder name, e.g. pathweak:<dir> or timm:<model>
    teacher_weights: str | None = None
    teacher_img_size: int | None = None  # the teacher's input side (set from the teacher)
    token_weight: float = 1.0  # weight of the patch-token loss (ViT teachers), 0 = embedding only
    distill_loss: str = "standardized"  # standardized (per-dimension standardised targets, MSE) | cosine
    l2_weight: float = 1.0  # distill_loss cosine: weight of the (normalised) L2 term beside the cosine term
    relation_weight: float = 0.0  # weight of the batch similarity-matrix (relational) loss, 0 = off
    whole_tile_views: float = 0.0  # fraction of distillation views that are the whole tile, un-augmented but
    # for a dihedral transform (the input extraction sees); the rest are the augmented crops. 0 = all augmented
    # pathology augmentations
    hed_jitter: float = 0.05  # std of per-channel HED stain scaling (0 = off)
    color_jitter: float = 0.2  # brightness/contrast/saturation strength (0 = off)
    hue_jitter: float = 0.02
    blur_prob: float = 0.3
    fourier_style: float = 0.0  # probability of swapping amplitude spectra within a batch (0 = off)
    stain_augment: float = 0.0  # probability of normalising a view (Macenko) toward a random tile's stain (0 = off)
    # RankMe and checkpoint selection
    rankme_samples: int = 512
    select: str = "rankme"  # the exported weights: rankme (the epoch of highest RankMe) | last (the final ones)
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
        if self.method not in ("dino", "mae", "mae3d", "distill"):
            raise ConfigError(f"unknown SSL method {self.method!r}", fix="use --method dino, mae or mae3d (3D patches)")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown architecture {self.arch!r}", fix=f"use one of {', '.join(ARCHS)}")
        if self.method == "mae3d":
            if self.patch_3d < 1 or self.img_size % self.patch_3d:
                raise ConfigError(
                    f"--img-size {self.img_size} (the cube side) must be a multiple of the 3D patch {self.patch_3d}",
                    fix="e.g. --img-size 16 with patch_3d 4, or --img-size 32 with patch_3d 8",
                )
        elif self.img_size % 16 or self.local_size % 16:
            raise ConfigError("image sizes must be multiples of the patch size 16", fix="e.g. --img-size 224 or 112")
        self._check_width()
        self._check_unified()
        if self.distill_loss not in DISTILL_LOSSES:
            raise ConfigError(
                f"unknown distillation loss {self.distill_loss!r}", fix=f"use one of {', '.join(DISTILL_LOSSES)}"
            )
        if not 0 <= self.stain_augment <= 1:
            raise ConfigError(f"stain_augment is a probability, got {self.stain_augment}", fix="use 0 to 1")
        if not 0 <= self.whole_tile_views <= 1:
            raise ConfigError(
                f"whole_tile_views is a fraction of the views, got {self.whole_tile_views}", fix="use 0 to 1"
            )
        if self.method == "distill" and not self.teacher:
            raise ConfigError(
                "distillation needs a teacher encoder", fix="pass --teacher pathweak:<dir> or timm:<model>"
            )
        if self.select not in ("rankme", "last"):
            raise ConfigError(f"unknown checkpoint selection {self.select!r}", fix="use select: rankme or last")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")
        if self.batch_size < 2:
            raise ConfigError("batch size must be at least 2")

    def _check_unified(self) -> None:
        if self.volume_share is not None and not 0 < self.volume_share < 1:
            raise ConfigError(f"volume_share is a share of the batches, got {self.volume_share}", fix="use 0 to 1")
        if not self.unified:
            return
        if self.method != "mae":
            raise ConfigError(
                f"one ViT for 2D tiles and 3D patches is pretrained with --method mae, not {self.method}",
                fix="pass --method mae (or pretrain on one kind of store)",
            )
        if self.patch_3d < 1 or self.volume_img_size % self.patch_3d:
            raise ConfigError(
                f"the 3D cube side {self.volume_img_size} must be a multiple of the 3D patch {self.patch_3d}",
                fix="e.g. volume_img_size 16 with patch_3d 4",
            )
        if self.adapt_from:
            raise ConfigError(
                "adapting an existing encoder (--adapt-from) is for one kind of store",
                fix="pretrain the unified 2D/3D ViT from scratch, or adapt on 2D tiles only",
            )

    def _check_width(self) -> None:
        if self.embed_dim is None and self.num_heads is None:
            return
        if self.method == "mae3d":
            raise ConfigError(
                "embed_dim/num_heads set a 2D timm ViT's width; the 3D ViT takes the arch's",
                fix="drop embed_dim/num_heads, or pick --arch vit_tiny|vit_small|vit_base",
            )
        dim, heads = self.width
        if dim < 1 or heads < 1 or dim % heads:
            raise ConfigError(
                f"embed_dim {dim} must be a positive multiple of num_heads {heads}",
                fix=f"e.g. embed_dim {heads * 32} with num_heads {heads}, or num_heads {max(1, dim // 32)}"
                if dim > 0
                else "use a positive embed_dim",
            )

    @property
    def width(self) -> tuple[int, int]:
        """(token width, attention heads) of the ViT: the arch's unless overridden."""
        dim, heads = ARCH_DIMS[self.arch]
        return self.embed_dim or dim, self.num_heads or heads

    @property
    def timm_model(self) -> str:
        return ARCHS[self.arch]

    @classmethod
    def tiny(cls, method: str = "dino", **overrides: object) -> SSLConfig:
        """A CPU-sized run: a 6-block ViT-Tiny at 112 px, small DINO head, few local crops."""
        base = dict(
            method=method,
            arch="vit_tiny",
            depth=6,
            img_size=112,
            local_size=48,
            local_crops=2,
            batch_size=32,
            out_dim=1024,
            head_hidden=512,
            head_bottleneck=128,
            decoder_dim=128,
            decoder_depth=2,
            warmup_steps=20,
            rankme_samples=256,
            num_workers=1,
            lr=1e-3,
        )
        if method == "mae3d":  # 16^3 voxel cubes of 4^3 tokens
            base.update(img_size=16, mask_ratio=0.75)
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    @classmethod
    def cpu(cls, method: str = "dino", **overrides: object) -> SSLConfig:
        """Many cheap steps for a few CPU cores: a 4-block ViT-Tiny on 64 px views (16 tokens), large
        batches, two 32 px local crops (DINO), 75 % masking (MAE); see docs/pretraining_and_features.md."""
        base: dict[str, object] = dict(
            depth=4,
            img_size=64,
            local_size=32,
            local_crops=2,
            batch_size=128,
            lr=2e-3,
            warmup_steps=20,
            mask_ratio=0.75,
            ema_momentum=0.99,
        )
        base.update(overrides)
        return cls.tiny(method, **base)
