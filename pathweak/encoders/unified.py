"""One ViT for 2D tiles and 3D patches (Uni4Eye's unified patch embedding, Cai et al. MICCAI 2022): a 2D
and a 3D patch embedding project into one token space, and one transformer (class token, blocks, final
norm) runs behind both. Each input kind has its own learned position embeddings (its token grid).

:class:`UnifiedViT` holds a timm ViT (``vit``: the 2D patch embedding and the shared transformer) and a
:class:`VolumeBranch` (``volume``: the 3D patch embedding and position embeddings, using ``vit``'s class
token, blocks and norms without owning them), so each parameter is stored once. ``forward`` embeds
(B, 3, S, S) images with the 2D path and (B, 1, C, C, C) cubes with the 3D path; both give the mean of the
normalised patch tokens (the MAE convention). ``pathweak pretrain --method mae`` trains one on 2D and 3D
stores together (ssl/mixed.py) and ``pathweak:<dir>`` loads it as an encoder of both kinds of store."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

UNIFIED_INPUT = "rgb+volume"  # EncoderInfo.input of an encoder that embeds 2D tiles and 3D patches


class PatchEmbed3D(nn.Module):
    """Non-overlapping ``patch``^3 voxel cubes -> tokens (B, n, D), n = (S / patch)^3."""

    def __init__(self, img_size: int, patch: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = (patch, patch, patch)
        self.grid_size = (img_size // patch,) * 3
        self.num_patches = (img_size // patch) ** 3
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def cube_tokens(net: Any, x: torch.Tensor) -> torch.Tensor:
    """All tokens (B, 1 + n, D) of cubes (B, C, S, S, S) after ``net``'s final norm, class token first (``net``:
    a 3D ViT or a :class:`VolumeBranch`: a 3D patch embedding, class token, position embeddings, blocks)."""
    x = net.patch_embed(x)
    cls = net.cls_token.expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + net.pos_embed
    return net.norm(net.blocks(net.norm_pre(x)))


class VolumeBranch(nn.Module):
    """The 3D path of a :class:`UnifiedViT`: its own patch and position embeddings in front of the 2D ViT's
    class token, blocks and norms (borrowed, not registered here), with the attributes
    :class:`~pathweak.ssl.mae.MAE` reads of a ViT."""

    _vit: Any  # the 2D timm ViT whose class token, blocks and norms this branch uses

    def __init__(self, vit: nn.Module, img_size: int, patch_size: int, in_chans: int = 1):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"the cube side {img_size} is not a multiple of the 3D patch {patch_size}")
        object.__setattr__(self, "_vit", vit)  # shared, owned (and saved) by the UnifiedViT's ``vit``
        dim = int(self._vit.embed_dim)
        self.img_size, self.embed_dim, self.num_features = img_size, dim, dim
        self.patch_embed = PatchEmbed3D(img_size, patch_size, in_chans, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def num_prefix_tokens(self) -> int:
        return 1

    @property
    def cls_token(self) -> Any:
        return self._vit.cls_token

    @property
    def norm_pre(self) -> Any:
        return self._vit.norm_pre

    @property
    def blocks(self) -> Any:
        return self._vit.blocks

    @property
    def norm(self) -> Any:
        return self._vit.norm

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return cube_tokens(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, 1:].mean(1)


class UnifiedViT(nn.Module):
    """A ViT with a 2D and a 3D patch embedding and one transformer: images (B, 3, S, S) or cubes
    (B, 1, C, C, C) to (B, D)."""

    def __init__(self, vit: nn.Module, volume: dict[str, Any]):
        super().__init__()
        self.vit = vit
        self.volume = VolumeBranch(vit, **volume)
        self.embed_dim = self.num_features = self.volume.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.volume(x) if x.ndim == 5 else self.vit(x)


def build_unified(timm_model: str, timm_kwargs: dict[str, Any], volume: dict[str, Any]) -> UnifiedViT:
    """The unified ViT of an encoder.json: the timm 2D ViT (``timm_model``, ``timm_kwargs``) and the 3D branch
    (``volume``: img_size, patch_size, in_chans)."""
    import timm

    vit = timm.create_model(timm_model, pretrained=False, num_classes=0, **timm_kwargs)
    return UnifiedViT(vit, volume)


def unified_branch(volume: dict[str, Any]) -> dict[str, Any]:
    """The :class:`VolumeBranch` arguments of an encoder.json's ``volume`` record (which also holds the
    3D input's mean and std)."""
    return {k: int(volume[k]) for k in ("img_size", "patch_size", "in_chans")}
