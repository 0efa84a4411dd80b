"""A 3D Vision Transformer for volume patches: a Conv3d patch embedding in front of timm's transformer
blocks, with the attributes of a timm ViT that :class:`~pathweak.ssl.mae.MAE` reads (``patch_embed``,
``cls_token``, ``pos_embed``, ``norm_pre``, ``blocks``, ``norm``). Its embedding is the mean of the
normalised patch tokens (the MAE convention), so ``forward`` maps (B, 1, S, S, S) to (B, D)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .archs import ARCH_DIMS  # embed dim and heads of the timm ViTs the 2D pretrainer offers
from .unified import PatchEmbed3D, cube_tokens  # shared with the unified 2D/3D ViT


class ViT3D(nn.Module):
    """ViT on (B, in_chans, S, S, S) cubes: class token, learned position embeddings, timm Blocks."""

    def __init__(
        self,
        img_size: int = 16,
        patch_size: int = 4,
        in_chans: int = 1,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.embed_dim, self.num_features = img_size, embed_dim, embed_dim
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed3D(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens (B, 1 + n, D) after the final norm, class token first."""
        return cube_tokens(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, self.num_prefix_tokens :].mean(1)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def vit3d_kwargs(arch: str, img_size: int, patch: int, depth: int | None) -> dict[str, Any]:
    """Constructor arguments of the 3D ViT for ``arch`` (recorded in encoder.json as ``vit3d``)."""
    dim, heads = ARCH_DIMS[arch]
    return {
        "img_size": img_size,
        "patch_size": patch,
        "in_chans": 1,
        "embed_dim": dim,
        "depth": depth or 12,
        "num_heads": heads,
    }


def build_vit3d(kwargs: dict[str, Any]) -> ViT3D:
    """The 3D ViT described by ``kwargs`` (as written by :func:`vit3d_kwargs`)."""
    return ViT3D(**kwargs)
