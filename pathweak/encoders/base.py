"""``Encoder``: a backbone that carries its own input transform, embedding size and precision."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .. import devices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is, recorded in every FeatureStore it writes."""

    name: str  # as given to create_encoder, e.g. "timm:vit_small_patch16_224"
    encoder_id: str  # folder-safe and unique per weights, e.g. "timm-vit_small_patch16_224-3f2a9c1d"
    embed_dim: int
    img_size: int  # side of the (square, or cubic for volumes) model input
    mean: tuple[float, ...] = IMAGENET_MEAN  # one per input channel
    std: tuple[float, ...] = IMAGENET_STD
    precision: str = "bf16"  # on CUDA; CPU always runs float32
    weights: str | None = None  # path of the weights file, "random:<seed>" for an explicit random init
    weights_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    input: str = "rgb"  # "rgb": (H, W, 3) tiles of slides or slice patches; "volume": (D, H, W) 3D patches;
    # "rgb+volume": both (a unified 2D/3D ViT, encoders/unified.py; extra["volume"] holds its 3D input)
    interpolation: str = "bilinear"  # of the resize to img_size ("bilinear" or "bicubic", antialiased)
    crop_pct: float = 1.0  # < 1: resize to img_size / crop_pct, then centre-crop img_size (timm's crop_pct)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Encoder(nn.Module):
    """Wraps a backbone mapping normalised (B, 3, S, S) images to (B, D) embeddings.

    ``preprocess`` turns uint8 tiles (B, H, W, 3) into the backbone's input (resize to ``img_size``,
    scale, normalise); ``embed`` does both under no-grad, with bf16 autocast on CUDA.
    """

    mean: torch.Tensor  # buffers (1, C, 1, 1[, 1]) of the input normalisation
    std: torch.Tensor
    volume_mean: torch.Tensor  # a unified 2D/3D encoder's: (1, 1, 1, 1, 1) of its 3D input
    volume_std: torch.Tensor

    def __init__(self, backbone: nn.Module, info: EncoderInfo):
        super().__init__()
        self.backbone = backbone
        self.info = info
        spatial = (1, 1, 1) if info.input == "volume" else (1, 1)
        self.register_buffer("mean", torch.tensor(info.mean).view(1, -1, *spatial), persistent=False)
        self.register_buffer("std", torch.tensor(info.std).view(1, -1, *spatial), persistent=False)
        if self.unified:
            vol = info.extra["volume"]
            self.register_buffer("volume_mean", torch.tensor(vol["mean"]).view(1, -1, 1, 1, 1), persistent=False)
            self.register_buffer("volume_std", torch.tensor(vol["std"]).view(1, -1, 1, 1, 1), persistent=False)

    @property
    def unified(self) -> bool:
        """Whether this encoder embeds both 2D tiles and 3D patches (one ViT, encoders/unified.py)."""
        return self.info.input == "rgb+volume"

    def is_volume_batch(self, tiles: torch.Tensor) -> bool:
        """Whether uint8 ``tiles`` are 3D patches (B, D, H, W) rather than RGB tiles (B, H, W, 3)."""
        return self.info.input == "volume" or (self.unified and tiles.shape[-1] != 3)

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    @property
    def encoder_id(self) -> str:
        return self.info.encoder_id

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) → normalised float (B, 3, S, S) on the tiles' device; for a volume encoder,
        uint8 3D patches (B, D, H, W) → (B, 1, S, S, S) (trilinear resize when the patch is not S^3)."""
        size = self.info.img_size
        if self.is_volume_batch(tiles):
            unified = self.unified
            size = int(self.info.extra["volume"]["img_size"]) if unified else size
            x = tiles.unsqueeze(1).float().div_(255.0)
            if tuple(x.shape[-3:]) != (size, size, size):
                x = nn.functional.interpolate(x, size=(size, size, size), mode="trilinear", align_corners=False)
            return (x - self.volume_mean) / self.volume_std if unified else (x - self.mean) / self.std
        # On the CPU the resize runs on the uint8 pixels (as PIL does in timm's and torchvision's eval
        # transforms; ~7x faster than in float for 224 -> 96 px, within one grey level of it), and only the
        # resized tiles become float; CUDA resizes in float. Then scale and normalise in one pass.
        x = tiles.permute(0, 3, 1, 2)
        if x.dtype != torch.uint8 or x.is_cuda:
            x = x.float()
        side = size if self.info.crop_pct >= 1 else round(size / self.info.crop_pct)
        if x.shape[-1] != side or x.shape[-2] != side:
            x = nn.functional.interpolate(
                x, size=(side, side), mode=self.info.interpolation, antialias=True, align_corners=False
            )
        if side != size:
            top = (side - size) // 2
            x = x[..., top : top + size, top : top + size]
        return torch.addcmul(-self.mean / self.std, x.float(), 1 / (255.0 * self.std))

    def check_tiles(self, is_3d: bool, tile_shape: tuple[int, ...], where: str) -> None:
        """Raise a clear error when a store's tiles (3D patches or not; one tile's shape) are not this
        encoder's input kind."""
        from ..errors import ConfigError

        if self.unified:
            if is_3d and tile_shape[-1] == 3:
                raise ConfigError(
                    f"3D patches 3 voxels wide ({'x'.join(map(str, tile_shape))}) read like RGB tiles to {self.info.name}",
                    path=where,
                    fix="tile the volume with a larger --patch",
                )
            return
        if is_3d and self.info.input != "volume":
            raise ConfigError(
                f"the store holds 3D patches ({'x'.join(map(str, tile_shape))} voxels) and {self.info.name} embeds 2D RGB tiles",
                path=where,
                fix="use a 3D encoder (e.g. --encoder monai:resnet18 --weights FILE|random), or tile the volume with --mode slices",
            )
        if not is_3d and self.info.input == "volume":
            raise ConfigError(
                f"{self.info.name} embeds 3D volume patches and the store holds 2D tiles ({'x'.join(map(str, tile_shape))})",
                path=where,
                fix="use a 2D encoder (pathweak:<dir>, timm:..., torchvision:...) for slides and slice patches",
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @property
    def has_tokens(self) -> bool:
        """Whether the backbone is a ViT whose patch tokens :meth:`token_map` can return."""
        b = self.backbone  # a ViT: patch embedding, token sequence out, prefix tokens to skip (not a Swin's NHWC map)
        return hasattr(b, "patch_embed") and hasattr(b, "forward_features") and hasattr(b, "num_prefix_tokens")

    def require_tokens(self) -> None:
        """Raise a clear error unless :meth:`token_map` applies (a ViT backbone)."""
        from ..errors import ConfigError

        if not self.has_tokens:
            raise ConfigError(
                f"encoder {self.info.name} has no patch tokens (not a ViT)",
                fix="use a ViT encoder (pathweak:<dir> or timm:vit_*) for token-level maps",
            )

    @property
    def token_patch_size(self) -> tuple[int, int]:
        """(height, width) in input pixels of one patch token of the ViT backbone (:attr:`has_tokens`)."""
        vit: Any = self.backbone  # a timm ViT (has_tokens): nn.Module's typing does not know its PatchEmbed
        ph, pw = vit.patch_embed.patch_size
        return int(ph), int(pw)

    @torch.no_grad()
    def token_map(self, tiles: torch.Tensor) -> torch.Tensor:
        """Patch-token embeddings (B, D, h, w) float32 of uint8 tiles (B, H, W, 3): one D-vector per
        16x16 input patch (a 14x14 map at 224 px), after the ViT's final norm and without prefix tokens."""
        self.require_tokens()
        x = self.preprocess(tiles)
        with devices.autocast(x.device, self.info.precision):
            vit: Any = self.backbone  # a timm ViT (require_tokens): nn.Module's typing does not know forward_features
            out = vit.forward_features(x)
        prefix = int(getattr(self.backbone, "num_prefix_tokens", 0))
        tokens = out[:, prefix:].float()
        ph, pw = self.token_patch_size
        h, w = x.shape[-2] // ph, x.shape[-1] // pw
        return tokens.transpose(1, 2).reshape(len(tokens), -1, h, w)

    @torch.no_grad()
    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) float32 of uint8 tiles (B, H, W, 3) (or 3D patches (B, D, H, W) for a volume encoder)."""
        x = self.preprocess(tiles)
        with devices.autocast(x.device, self.info.precision):
            return self.backbone(x).float()
