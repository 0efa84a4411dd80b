"""MAE (He et al. 2022) on a timm ViT: encode a random ~10 % of the patches, reconstruct the rest."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embeddings (grid*grid, dim)."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gy, gx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    emb = np.concatenate([one_d(dim // 2, gy), one_d(dim // 2, gx)], axis=1)
    return torch.from_numpy(emb).float()


class MAE(nn.Module):
    """Masked autoencoder around a timm VisionTransformer ``encoder`` (class token, learned pos-embed)."""

    encoder: Any  # a timm VisionTransformer (or ViT3D): patch_embed, pos_embed, cls_token, blocks... beyond nn.Module
    decoder_pos: torch.Tensor  # buffer (1, n, decoder_dim)

    def __init__(
        self,
        encoder: nn.Module,
        img_size: int,
        mask_ratio: float,
        decoder_dim: int,
        decoder_depth: int,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.encoder = encoder
        self.patch = int(self.encoder.patch_embed.patch_size[0])
        self.grid = img_size // self.patch
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        dim = self.encoder.embed_dim
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos", sincos_pos_embed(decoder_dim, self.grid).unsqueeze(0), persistent=False)
        heads = max(1, decoder_dim // 64)
        self.decoder = nn.Sequential(*[Block(decoder_dim, heads, mlp_ratio=4.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def encode_masked(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visible tokens (with the class token first), the mask (1 = hidden) and the restore order."""
        enc = self.encoder
        x = enc.patch_embed(imgs)
        if x.ndim == 4:  # dynamic image size keeps the grid
            x = x.flatten(1, 2)
        b, n, d = x.shape
        pos = enc.pos_embed
        x = x + pos[:, enc.num_prefix_tokens :]
        keep = max(1, int(round(n * (1 - self.mask_ratio))))
        noise = torch.rand(b, n, device=x.device, generator=generator)
        order = torch.argsort(noise, dim=1)
        restore = torch.argsort(order, dim=1)
        kept = torch.gather(x, 1, order[:, :keep, None].expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        cls = (enc.cls_token + pos[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, kept], dim=1)
        x = enc.norm_pre(x)
        x = enc.blocks(x)
        return enc.norm(x), mask, restore

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, n = restore.shape
        visible = x[:, 1:]
        masks = self.mask_token.expand(b, n - visible.shape[1], -1)
        full = torch.cat([visible, masks], dim=1)
        full = torch.gather(full, 1, restore[:, :, None].expand(-1, -1, full.shape[-1]))
        full = full + self.decoder_pos
        x = torch.cat([x[:, :1], full], dim=1)
        x = self.decoder_norm(self.decoder(x))
        return self.decoder_pred(x[:, 1:])

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        p, g = self.patch, self.grid
        x = imgs.reshape(imgs.shape[0], 3, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], g * g, p * p * 3)

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error over the hidden patches (pixels normalised per patch)."""
        latent, mask, restore = self.encode_masked(imgs, generator)
        pred = self.decode(latent, restore)
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()
