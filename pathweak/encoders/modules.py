"""The parts of the presets that timm does not provide: embedding rules over a timm ViT's tokens,
CONCH's attentional pooler, CTransPath's convolutional stem, and a wrapper for transformers models."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _tokens_embedding(tokens: torch.Tensor, rule: str, prefix: int) -> torch.Tensor:
    cls = tokens[:, 0]
    if rule == "cls":
        return cls
    if rule == "cls+mean":
        return torch.cat([cls, tokens[:, prefix:].mean(1)], dim=-1)
    raise ValueError(f"unknown embedding rule {rule!r}")


class _TrunkTokens(nn.Module):
    """What token maps (``Encoder.token_map``) read of a wrapped timm ViT ``trunk``: its patch embedding,
    prefix-token count and token features."""

    trunk: Any  # a timm ViT (forward_features, patch_embed, num_prefix_tokens: beyond nn.Module's typing)

    @property
    def patch_embed(self) -> Any:
        return self.trunk.patch_embed

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.trunk.num_prefix_tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)


class ViTEmbedder(_TrunkTokens):
    """A timm ViT (``trunk``) whose embedding is ``cls`` or ``cls+mean`` of its final, normed tokens.
    Exposes the trunk's ``patch_embed``/``forward_features``/``num_prefix_tokens`` for token maps."""

    def __init__(self, trunk: nn.Module, rule: str):
        super().__init__()
        self.trunk, self.rule = trunk, rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _tokens_embedding(self.trunk.forward_features(x), self.rule, self.num_prefix_tokens)


class AttentionalPooler(nn.Module):
    """CoCa's attentional pooler as CONCH uses it: learned queries attend (multi-head) over the
    LayerNormed tokens. Parameter names follow the released checkpoints."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_k(x).permute(1, 0, 2)  # (B, L, C) -> (L, B, C)
        q = self.ln_q(self.query).unsqueeze(1).expand(-1, x.shape[1], -1)
        return self.attn(q, x, x, need_weights=False)[0].permute(1, 0, 2)


class ConchVision(_TrunkTokens):
    """CONCH's image tower: a timm ViT trunk, the contrastive attentional pooler and its LayerNorm. The
    embedding is ``encode_image(proj_contrast=False, normalize=False)``: the pooled, normed query.
    ``proj_contrast`` (v1 only) is kept so the checkpoint loads strictly; it is not applied."""

    def __init__(self, trunk: nn.Module, d_model: int, context_dim: int, n_head: int = 8, proj: bool = True):
        super().__init__()
        self.trunk = trunk
        self.attn_pool_contrast = AttentionalPooler(d_model, context_dim, n_head, 1)
        self.ln_contrast = nn.LayerNorm(d_model)
        if proj:
            self.proj_contrast = nn.Parameter(torch.randn(d_model, d_model) * context_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


class ConvStem(nn.Module):
    """CTransPath's patch embedding for timm's Swin: two Conv3x3/s2 + BN + ReLU (3 -> E/8 -> E/4), a
    Conv1x1 to E, then the Swin norm; NHWC out. Key names are the original ``proj.N`` / ``norm``."""

    def __init__(
        self,
        img_size: Any = 224,
        patch_size: Any = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Any = None,
        strict_img_size: bool = True,
        output_fmt: str = "NHWC",
        **_: Any,
    ):
        super().__init__()
        from timm.layers import to_2tuple

        if to_2tuple(patch_size) != (4, 4) or embed_dim % 8:
            raise ValueError("ConvStem needs patch_size 4 and embed_dim divisible by 8")
        self.img_size, self.patch_size = to_2tuple(img_size), (4, 4)
        self.grid_size = (self.img_size[0] // 4, self.img_size[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers: list[nn.Module] = []
        cin, cout = in_chans, embed_dim // 8
        for _conv in range(2):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def set_input_size(self, img_size: Any = None, **_: Any) -> None:  # timm may call it; the stem is size-agnostic
        if img_size is not None:
            from timm.layers import to_2tuple

            self.img_size = to_2tuple(img_size)
            self.grid_size = (self.img_size[0] // 4, self.img_size[1] // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class HFEmbedder(nn.Module):
    """A transformers vision model (``ViTModel``, ``Dinov2Model``); embedding from ``last_hidden_state``
    (after the final LayerNorm): ``cls`` or ``cls+mean`` of the patch tokens."""

    def __init__(self, model: nn.Module, rule: str, prefix: int = 1):
        super().__init__()
        self.model, self.rule, self.prefix = model, rule, prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model(pixel_values=x).last_hidden_state
        return _tokens_embedding(tokens, self.rule, self.prefix)
