"""3D MAE: the masked autoencoder of :mod:`pathweak.ssl.mae` on a :class:`~pathweak.encoders.vit3d.ViT3D`;
hidden voxel cubes are reconstructed from the visible ones (one channel, per-cube normalised targets)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .mae import MAE


def sincos_pos_embed_3d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 3D sine-cosine position embeddings (grid^3, dim): a third of the channels per axis (z, y, x),
    zero-padded to ``dim``."""
    per_axis = (dim // 6) * 2
    omega = 1.0 / 10000 ** (np.arange(per_axis // 2, dtype=np.float64) / (per_axis / 2))
    zz, yy, xx = np.meshgrid(*(np.arange(grid, dtype=np.float64),) * 3, indexing="ij")
    parts = []
    for axis in (zz, yy, xx):
        out = np.einsum("m,d->md", axis.reshape(-1), omega)
        parts += [np.sin(out), np.cos(out)]
    emb = np.concatenate(parts, axis=1)
    emb = np.pad(emb, ((0, 0), (0, dim - emb.shape[1])))
    return torch.from_numpy(emb).float()


class MAE3D(MAE):
    """Masked autoencoder on (B, 1, S, S, S) cubes around a ViT3D ``encoder``."""

    def __init__(
        self,
        encoder: nn.Module,
        img_size: int,
        mask_ratio: float,
        decoder_dim: int,
        decoder_depth: int,
        norm_pix_loss: bool = True,
    ):
        super().__init__(encoder, img_size, mask_ratio, decoder_dim, decoder_depth, norm_pix_loss)
        self.in_chans = int(self.encoder.patch_embed.proj.in_channels)
        self.register_buffer("decoder_pos", sincos_pos_embed_3d(decoder_dim, self.grid).unsqueeze(0), persistent=False)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch**3 * self.in_chans)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S, S) -> (B, n, p^3 * C) in the patch embedding's token order (z, y, x)."""
        p, g, c = self.patch, self.grid, self.in_chans
        x = imgs.reshape(imgs.shape[0], c, g, p, g, p, g, p)
        return torch.einsum("nczdyhxw->nzyxdhwc", x).reshape(imgs.shape[0], g**3, p**3 * c)
