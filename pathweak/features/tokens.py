"""Token-level bags for sub-tile segmentation: a ViT's patch tokens (a 14x14 map inside each 224 px tile)
as instances on a fine grid, so the grid heads (``wsseg``) segment inside tiles instead of tile by tile.

:class:`TokenBank` has the bank interface the training loop uses (``bag``, ``grid``, ``embed_dim``,
``device``), held in memory: one bag per tile (:meth:`TokenBank.from_tiles`: an image dataset such as
EBHI-Seg, where each image is labelled) or one per TileStore (:meth:`TokenBank.from_tile_stores`: every
tile's tokens placed at ``tile grid position x token map size + token position``). ``pool`` averages
``pool x pool`` tokens first (a 7x7 map per tile with 2) to bound memory on large slides; where it does not
divide the map (7 tokens, ``pool`` 2), the map is cut into equal cells that tile the tile exactly
(:func:`pool_tokens`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError
from ..heads.base import GridBox
from ..progress import progress_bar
from .wrapped import WrappedEncoder

if TYPE_CHECKING:
    from ..encoders.base import Encoder


def encode_tokens(
    encoder: Encoder, tiles: np.ndarray, *, batch_size: int = 64, pool: int = 1, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Token maps (N, h, w, D) float16 on the CPU of uint8 tiles (N, H, W, 3), ``pool``-averaged."""
    if pool < 1:
        raise ConfigError(f"token pooling must be 1 or more, got {pool}")
    encoder = encoder.to(device)
    out = []
    for start in range(0, len(tiles), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(tiles[start : start + batch_size])).to(device)
        out.append(pooled_token_maps(encoder, batch, pool).to("cpu", torch.float16))
    return torch.cat(out)


def pooled_token_maps(encoder: Encoder, tiles: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """Token maps (B, h, w, D) float32 of uint8 tiles (B, H, W, 3) on their device, ``pool``-averaged
    (:func:`pool_tokens`)."""
    maps = encoder.token_map(tiles)
    if pool > 1:
        maps = pool_tokens(maps, pool)
    return maps.permute(0, 2, 3, 1)


def pool_tokens(maps: torch.Tensor, pool: int) -> torch.Tensor:
    """Maps (B, D, h, w) pooled to (B, D, ceil(h / pool), ceil(w / pool)) cells of equal size that tile the
    map exactly: ``pool x pool`` blocks averaged where ``pool`` divides the sides; otherwise (7 tokens and
    ``pool`` 2: 4 cells of 1.75 tokens) each cell is the mean of the tokens under it weighted by the area
    they share, so a cell's box on the slide is exactly what its row summarises."""
    h, w = maps.shape[-2:]
    if h % pool == 0 and w % pool == 0:
        return torch.nn.functional.avg_pool2d(maps, pool)
    rows = area_weights(h, -(-h // pool)).to(maps)
    cols = area_weights(w, -(-w // pool)).to(maps)
    return torch.einsum("bdhw,ih,jw->bdij", maps, rows, cols)


def area_weights(n: int, m: int) -> torch.Tensor:
    """(m, n) float32: the share of each of ``n`` unit cells in each of ``m`` equal cells spanning them (each
    row sums to 1)."""
    edges = torch.linspace(0, n, m + 1, dtype=torch.float64)
    units = torch.arange(n, dtype=torch.float64)[None]
    overlap = (torch.minimum(edges[1:, None], units + 1) - torch.maximum(edges[:-1, None], units)).clamp(min=0)
    return (overlap / overlap.sum(1, keepdim=True)).float()


def tile_token_cells(cells: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Token-grid (row, col) of every token of tiles at tile-grid ``cells`` (n, 2) with (h, w) token maps:
    tile position x map size + token position, tile by tile, row-major inside each tile."""
    within = token_grid(h, w).to(torch.int64)
    origin = cells.to(torch.int64) * torch.tensor([h, w])
    return (origin[:, None, :] + within[None]).reshape(-1, 2)


class TokenRows(WrappedEncoder):
    """An encoder's patch tokens as feature rows (``pathweak extract --tokens POOL``): ``embed`` maps a
    batch of tiles to ``h x w`` rows per tile (tile by tile, row-major). Its ``encoder_id`` is the
    encoder's plus ``-tokens<POOL>``, so token features never mix with tile features."""

    def __init__(self, encoder: Encoder, pool: int = 1):
        from dataclasses import replace

        if pool < 1:
            raise ConfigError(f"token pooling must be 1 or more, got {pool}", fix="pass --tokens 1, 2, ...")
        encoder.require_tokens()
        self.encoder, self.pool = encoder, pool
        size = encoder.info.img_size
        ph, pw = encoder.token_patch_size
        self.full = (size // ph, size // pw)  # tokens per tile side before pooling
        self.map_shape = (-(-self.full[0] // pool), -(-self.full[1] // pool))
        self.info = replace(
            encoder.info,
            encoder_id=f"{encoder.info.encoder_id}-tokens{pool}",
            # "cells": equal cells tiling the tile (pool_tokens); part of the FeatureStore's cache key
            extra={**encoder.info.extra, "tokens": {"pool": pool, "map": list(self.map_shape), "cells": "equal"}},
        )

    def check_tiles(self, is_3d: bool, tile_shape: tuple[int, ...], where: str) -> None:
        self.encoder.check_tiles(is_3d, tile_shape, where)

    @torch.no_grad()
    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """Rows (B * h * w, D) float32 of uint8 tiles (B, H, W, 3)."""
        maps = pooled_token_maps(self.encoder, tiles, self.pool)
        return maps.reshape(-1, maps.shape[-1]).float()

    def layout(
        self, grid_index: np.ndarray, coords: np.ndarray, tile_extent: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Grid positions (row, col), level-0 top-left (x, y) and level-0 size (w, h) of every row, for
        tiles at ``grid_index`` (row, col) and ``coords`` (x, y) that each cover ``tile_extent`` level-0 px."""
        h, w = self.map_shape
        cell = (tile_extent[0] / w, tile_extent[1] / h)  # the cells tile the tile exactly (pool_tokens)
        grid = tile_token_cells(torch.from_numpy(np.asarray(grid_index, np.int64)), h, w).numpy()
        within = token_grid(h, w).numpy().astype(np.float64)  # (row, col)
        offset = np.stack([np.floor(within[:, 1] * cell[0]), np.floor(within[:, 0] * cell[1])], 1).astype(np.int64)
        xy = (np.asarray(coords, np.int64)[:, None, :] + offset[None]).reshape(-1, 2)
        return grid.astype(np.int32), xy, cell


class TokenBank:
    """Bags of patch tokens with their (row, col) on a token grid, in memory on ``device``."""

    resident = True

    def __init__(
        self,
        bags: list[torch.Tensor],
        grids: list[torch.Tensor],
        names: list[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float16,
    ):
        if not bags:
            raise ConfigError("no token bags", fix="give at least one tile or TileStore")
        self.device = torch.device(device)
        self.names = list(names)
        self.embed_dim = int(bags[0].shape[-1])
        self._bags = [b.reshape(-1, self.embed_dim).to(self.device, dtype) for b in bags]
        self._grids = [g.to(self.device, torch.int32) for g in grids]
        self._boxes = [GridBox.of(g) for g in grids]  # on the host, so training steps read nothing back

    def __len__(self) -> int:
        return len(self._bags)

    def bag(self, i: int) -> torch.Tensor:
        """Tokens (n_i, D) of bag ``i``."""
        return self._bags[i]

    def grid(self, i: int) -> torch.Tensor:
        """(row, col) int32 of each token of bag ``i`` on the token grid."""
        return self._grids[i]

    def grid_box(self, i: int) -> GridBox:
        """The bounding box of bag ``i``'s token grid (found on the host when the bank was made)."""
        return self._boxes[i]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def to(self, device: str | torch.device) -> TokenBank:
        """Move every bag and grid to ``device`` in place (what each rank of multi-device training does)."""
        device = torch.device(device)
        if device != self.device:
            self._bags = [b.to(device) for b in self._bags]
            self._grids = [g.to(device) for g in self._grids]
        self.device = device
        return self

    @classmethod
    def from_tiles(
        cls,
        encoder: Encoder,
        tiles: np.ndarray,
        names: list[str],
        *,
        pool: int = 1,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> TokenBank:
        """One bag per tile (image): its token map, row-major on an (h, w) grid."""
        if len(names) != len(tiles):
            raise ConfigError(f"{len(tiles)} tiles but {len(names)} names")
        maps = _encode_in_chunks(
            encoder, len(tiles), lambda a, b: tiles[a:b], "encoding tokens", pool, batch_size, device, progress
        )
        grid = token_grid(maps.shape[1], maps.shape[2])
        return cls(list(maps), [grid] * len(maps), names, device)

    @classmethod
    def from_tile_stores(
        cls,
        encoder: Encoder,
        stores: list[str | Path],
        *,
        pool: int = 1,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> TokenBank:
        """One bag per TileStore (slide): every tile's tokens at tile position x map size + token position."""
        from ..store.tiles import TileStore

        bags, grids, names = [], [], []
        for path in stores:
            with TileStore.open(path) as store:
                cells = torch.from_numpy(np.asarray(store.grid_index, np.int64))
                maps_t = _encode_in_chunks(
                    encoder,
                    len(store),
                    lambda a, b: store.read_tiles(slice(a, b)),
                    f"tokens {store.slide_id}",
                    pool,
                    batch_size,
                    device,
                    progress,
                )
                names.append(store.slide_id)
            grids.append(tile_token_cells(cells, maps_t.shape[1], maps_t.shape[2]))
            bags.append(maps_t)
        return cls(bags, grids, names, device)


def _encode_in_chunks(
    encoder: Encoder,
    n: int,
    read: Callable[[int, int], np.ndarray],
    label: str,
    pool: int,
    batch_size: int,
    device: str | torch.device,
    progress: bool,
) -> torch.Tensor:
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
