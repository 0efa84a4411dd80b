"""TransMIL (Shao et al. 2021): two transformer layers with Nystrom attention over the tiles and a class
token, with the PPEG positional encoding (depthwise 7/5/3 convolutions over a 2D token map) between them.

The original lays the tokens on a square in bag order. Given the tiles' (row, col) positions on the
slide (``grid``), pathweak puts each token on its real cell instead and orders the sequence by raster
position, so the convolutions see true neighbours and the tile order does not matter; it falls back to the square when the grid's bounding box is much larger than the bag
(scattered tissue). The attention reported per tile is the class token's attention in the last layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .. import devices
from .base import GridBox, HeadOutput, MILHead, register_head

MAX_GRID_FILL = 4  # use the slide grid when its bounding box has at most this many cells per tile


def pinv_iterative(x: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse by the iterative method of the Nystromformer (batched matrices)."""
    abs_x = x.abs()
    z = x.transpose(-1, -2) / (abs_x.sum(-1).max() * abs_x.sum(-2).max())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention approximated with ``landmarks`` segment-mean landmarks (Xiong et al.
    2021), plus a depthwise convolution residual on the values; the sequence is zero-padded at the front
    to a multiple of ``landmarks``. Sequences no longer than ``landmarks`` get exact attention."""

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        landmarks: int = 64,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.heads, self.landmarks, self.pinv_iterations = heads, landmarks, pinv_iterations
        self.dim_head = dim // heads
        self.scale = self.dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * self.dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * self.dim_head, dim), nn.Dropout(dropout))
        self.res_conv = nn.Conv2d(
            heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0), groups=heads, bias=False
        )

    def forward(self, x: torch.Tensor, query_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, n, dim) → (B, n, dim); with ``query_index``, also the head-averaged attention (B, n) of that
        position over the sequence."""
        b, n, _ = x.shape
        m = self.landmarks
        pad = (m - n % m) % m if n > m else 0
        if pad:
            x = F.pad(x, (0, 0, pad, 0))
        q, k, v = (t.reshape(b, -1, self.heads, self.dim_head).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        q = q * self.scale
        if n <= m:  # no more tokens than landmarks: exact attention is cheaper than its approximation
            attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
            out = attn @ v
            row = None if query_index is None else attn[:, :, query_index : query_index + 1]
        else:
            seg = q.shape[2] // m
            q_land = q.reshape(b, self.heads, m, seg, self.dim_head).mean(3)
            k_land = k.reshape(b, self.heads, m, seg, self.dim_head).mean(3)
            attn1 = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)
            attn2 = torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1)
            attn3 = torch.softmax(q_land @ k.transpose(-1, -2), dim=-1)
            with devices.full_precision(x.device):  # the iteration needs full precision
                attn2_inv = pinv_iterative(attn2.float(), self.pinv_iterations).to(attn2.dtype)
            out = (attn1 @ attn2_inv) @ (attn3 @ v)
            row = (
                None
                if query_index is None
                else attn1[:, :, pad + query_index : pad + query_index + 1] @ attn2_inv @ attn3
            )
        out = out + self.res_conv(v)
        out = self.to_out(out.transpose(1, 2).reshape(b, -1, self.heads * self.dim_head))[:, pad:]
        if row is None:
            return out, None
        return out, row.mean(1)[:, 0, pad:]  # (B, n): the query's attention, averaged over heads


class TransLayer(nn.Module):
    def __init__(self, dim: int, heads: int, landmarks: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim, heads, landmarks, dropout=dropout)

    def forward(self, x: torch.Tensor, query_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, attn = self.attn(self.norm(x), query_index)
        return x + out, attn


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7x7, 5x5 and 3x3 convolutions over the token map."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(1, dim, H, W) → the same shape."""
        return fmap + self.proj(fmap) + self.proj1(fmap) + self.proj2(fmap)


@register_head("transmil")
class TransMIL(MILHead):
    """TransMIL: Nystrom-attention transformer with a class token and PPEG positional encoding (Shao et al. 2021)."""

    uses_grid = True
    takes_box = True

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        *,
        hidden: int = 256,
        heads: int = 8,
        landmarks: int = 64,
        dropout: float = 0.1,
        use_grid: bool = True,
    ):
        super().__init__(
            in_dim, n_outputs, hidden=hidden, heads=heads, landmarks=landmarks, dropout=dropout, use_grid=use_grid
        )
        self.use_grid = use_grid
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.layer1 = TransLayer(hidden, heads, landmarks, dropout)
        self.ppeg = PPEG(hidden)
        self.layer2 = TransLayer(hidden, heads, landmarks, dropout)
        self.norm = nn.LayerNorm(hidden)
        self.classifier = nn.Linear(hidden, n_outputs)

    def forward(
        self,
        x: torch.Tensor,
        grid: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        box: GridBox | None = None,
    ) -> HeadOutput:
        n = x.shape[0]
        h = self.fc(x)
        layout = self._layout(n, grid if self.use_grid else None, h.device, box)
        order = None
        if layout is None:  # the original: a square in bag order, padded by repeating the first tokens
            side = math.ceil(math.sqrt(n))
            h = torch.cat([h, h[: side * side - n]]) if side * side > n else h
        else:  # raster order of the grid, so the sequence (and the value convolution) follows the slide
            order = torch.argsort(layout[0])
            h, layout = h[order], (layout[0][order], layout[1], layout[2])
        seq = torch.cat([self.cls_token[0], h])[None]  # (1, 1 + n', hidden)
        seq, _ = self.layer1(seq)
        seq = torch.cat([seq[:, :1], self._position(seq[0, 1:], layout, n)[None]], dim=1)
        seq, attn = self.layer2(seq, query_index=0)
        seq = self.norm(seq)[0]
        tokens = seq[1 : n + 1]
        a = attn[0, 1 : n + 1].float().clamp_min(0)
        a = (a / a.sum().clamp_min(1e-12))[:, None]
        inst = self.classifier(tokens)
        if order is not None:  # back to the bag's order
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(n, device=order.device)
            inst, a = inst[inverse], a[inverse]
        return HeadOutput(self.classifier(seq[0]), inst, a)

    def _layout(
        self, n: int, grid: torch.Tensor | None, device: torch.device, box: GridBox | None = None
    ) -> tuple[torch.Tensor, int, int] | None:
        """(flat cell index of each tile, rows, cols) on the slide grid, or None for the square layout; the
        grid's size from ``box`` (the host's) when given, else read from the device."""
        if grid is None or n == 0 or grid.shape[1] != 2:  # no grid, or a volume's 3D grid: the square
            return None
        g = grid.to(device=device, dtype=torch.long)
        g = g - g.min(0).values
        rows, cols = box.shape if box is not None else (int(g[:, 0].max()) + 1, int(g[:, 1].max()) + 1)
        if rows * cols > MAX_GRID_FILL * n + 64:
            return None
        return g[:, 0] * cols + g[:, 1], rows, cols

    def _position(self, tokens: torch.Tensor, layout: tuple[torch.Tensor, int, int] | None, n: int) -> torch.Tensor:
        """PPEG over the token map: the slide grid (empty cells zero) or the square of the original."""
        dim = tokens.shape[1]
        if layout is None:
            side = math.isqrt(tokens.shape[0])
            fmap = tokens.T.reshape(1, dim, side, side)
            return self.ppeg(fmap).reshape(dim, -1).T
        cells, rows, cols = layout
        fmap = tokens.new_zeros(rows * cols, dim).index_copy(0, cells, tokens)
        fmap = self.ppeg(fmap.T.reshape(1, dim, rows, cols)).reshape(dim, -1).T
        return fmap[cells]
