"""The ViT sizes pathweak builds itself (pretraining's 2D ViTs, the 3D ViT): timm's model name of each,
and its token width and attention heads. A plain table: importing it imports nothing."""

from __future__ import annotations

ARCHS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
ARCH_DIMS = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}  # (embed dim, heads) of each arch
