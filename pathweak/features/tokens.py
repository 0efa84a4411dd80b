"""Token-level bags for sub-tile segmentation: a ViT's patch tokens (a 14x14 map inside each 224 px tile)
as instances on a fine grid, so the grid heads (``wsseg``) segment inside tiles instead of tile by tile.

:class:`TokenBank` has the bank interface the training loop uses (``bag``, ``grid``, ``embed_dim``,
``device``), held in memory: one bag per tile (:meth:`TokenBank.from_tiles`: an image dataset such as
EBHI-Seg, where each image is labelled) or one per TileStore (:meth:`TokenBank.from_tile_stores`: every
tile's tokens placed at ``tile grid position x token map size + token position``). ``pool`` averages
``pool x pool`` tokens first (a 7x7 map per tile with 2) to bound memory on large slides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..progress import progress_bar


def encode_tokens(encoder: Any, tiles: np.ndarray, *, batch_size: int = 64, pool: int = 1,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Token maps (N, h, w, D) float16 on the CPU of uint8 tiles (N, H, W, 3), ``pool``-averaged."""
    if pool < 1:
        raise ConfigError(f"token pooling must be 1 or more, got {pool}")
    encoder = encoder.to(device)
    out = []
    for start in range(0, len(tiles), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(tiles[start:start + batch_size])).to(device)
        maps = encoder.token_map(batch)
        if pool > 1:
            maps = torch.nn.functional.avg_pool2d(maps, pool, ceil_mode=True)
        out.append(maps.permute(0, 2, 3, 1).to("cpu", torch.float16))
    return torch.cat(out)


class TokenBank:
    """Bags of patch tokens with their (row, col) on a token grid, in memory on ``device``."""

    resident = True

    def __init__(self, bags: list[torch.Tensor], grids: list[torch.Tensor], names: list[str],
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16):
        if not bags:
            raise ConfigError("no token bags", fix="give at least one tile or TileStore")
        self.device = torch.device(device)
        self.names = list(names)
        self.embed_dim = int(bags[0].shape[-1])
        self._bags = [b.reshape(-1, self.embed_dim).to(self.device, dtype) for b in bags]
        self._grids = [g.to(self.device, torch.int32) for g in grids]

    def __len__(self) -> int:
        return len(self._bags)

    def bag(self, i: int) -> torch.Tensor:
        """Tokens (n_i, D) of bag ``i``."""
        return self._bags[i]

    def grid(self, i: int) -> torch.Tensor:
        """(row, col) int32 of each token of bag ``i`` on the token grid."""
        return self._grids[i]

    def index(self, name: str) -> int:
        return self.names.index(name)

    @classmethod
    def from_tiles(cls, encoder: Any, tiles: np.ndarray, names: list[str], *, pool: int = 1, batch_size: int = 64,
                   device: str | torch.device = "cpu", progress: bool = False) -> TokenBank:
        """One bag per tile (image): its token map, row-major on an (h, w) grid."""
        if len(names) != len(tiles):
            raise ConfigError(f"{len(tiles)} tiles but {len(names)} names")
        maps = _encode_in_chunks(encoder, len(tiles), lambda a, b: tiles[a:b], "encoding tokens", pool, batch_size,
                                 device, progress)
        grid = token_grid(maps.shape[1], maps.shape[2])
        return cls(list(maps), [grid] * len(maps), names, device)

    @classmethod
    def from_tile_stores(cls, encoder: Any, stores: list[str | Path], *, pool: int = 1, batch_size: int = 64,
                         device: str | torch.device = "cpu", progress: bool = False) -> TokenBank:
        """One bag per TileStore (slide): every tile's tokens at tile position x map size + token position."""
        from ..tiling import TileStore

        bags, grids, names = [], [], []
        for path in stores:
            with TileStore.open(path) as store:
                cells = torch.from_numpy(np.asarray(store.grid_index, np.int64))
                maps_t = _encode_in_chunks(encoder, len(store), lambda a, b: store.read_tiles(slice(a, b)),
                                           f"tokens {store.slide_id}", pool, batch_size, device, progress)
                names.append(store.slide_id)
            h, w = maps_t.shape[1], maps_t.shape[2]
            within = token_grid(h, w)  # (h*w, 2)
            origin = cells * torch.tensor([h, w])  # (n, 2)
            grids.append((origin[:, None, :] + within[None]).reshape(-1, 2))
            bags.append(maps_t)
        return cls(bags, grids, names, device)


def _encode_in_chunks(encoder: Any, n: int, read: Any, label: str, pool: int, batch_size: int,
                      device: str | torch.device, progress: bool) -> torch.Tensor:
    """Token maps (n, h, w, D) of ``read(start, stop)``'s tiles, a few batches at a time, with a progress bar."""
    maps = []
    step = batch_size * 4
    with progress_bar(n, label, progress) as advance:
        for start in range(0, n, step):
            tiles = read(start, min(n, start + step))
            maps.append(encode_tokens(encoder, tiles, batch_size=batch_size, pool=pool, device=device))
            advance(len(tiles))
    return torch.cat(maps)


def token_grid(h: int, w: int) -> torch.Tensor:
    """(row, col) int32 of an (h, w) map's cells, row-major."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([rows, cols], -1).reshape(-1, 2).to(torch.int32)


def cam_to_pixels(cam_prob: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A token-level probability map (h, w) upsampled bilinearly to pixels ``size`` (H, W), float32."""
    up = torch.nn.functional.interpolate(cam_prob[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return up[0, 0].cpu().numpy()
