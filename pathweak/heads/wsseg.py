"""Weakly supervised segmentation on the slide's tile grid: the tiles' projected features are placed on
their (row, col) cells as a 2D feature map (empty cells zero), a few residual 3x3 convolutions mix
neighbouring tiles, and a 1x1 convolution gives one class activation map (CAM) per class. The CAM at a
tile's cell is that tile's logits (its softmax the per-tile probabilities: the segmentation); the slide
logits pool the CAM over the tiles (``pool``: ``lse`` log-sum-exp with sharpness ``r``, ``topk`` mean of
the ``k`` highest, or ``mean``), so slide labels alone train it. At prediction the per-tile ``mask``
thresholds the positive-class probability (``threshold``: a level, or ``"otsu"`` per slide).

Volumes: with ``spatial_dims=3`` the map is 3D — patches on their (z, y, x) patch grid, 3x3x3 convolutions —
for FeatureStores of volume patches (whose bank grid has three columns).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .base import GridBox, HeadOutput, MILHead, check_threshold, foreground_mask, projection, register_head
from .ins import topk_pool


def grid_layout(grid: torch.Tensor, box: GridBox | None = None) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor]:
    """(flat cell index of each tile, the shape of the tiles' bounding box, its origin) for a grid of
    (row, col) or (z, y, x) positions; flat indices are row-major in that box (its shape from ``box``, the
    host's, when given, else read from the device)."""
    g = grid.long()
    origin = g.min(0).values
    g = g - origin
    shape = box.shape if box is not None else tuple(int(v) + 1 for v in g.max(0).values)
    flat = torch.zeros(len(g), dtype=torch.long, device=g.device)
    for axis, size in enumerate(shape):
        flat = flat * size + g[:, axis]
    return flat, shape, origin


@register_head("wsseg")
class WSSeg(MILHead):
    """Weakly supervised segmentation: a CNN on the slide's tile grid (or a volume's patch grid) whose class activation map segments the tiles."""

    uses_grid = True
    takes_box = True

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        *,
        hidden: int = 128,
        layers: int = 2,
        kernel: int = 3,
        dropout: float = 0.25,
        pool: str = "lse",
        r: float = 2.0,
        topk: int = 4,
        negative_class: int = 0,
        threshold: float | str = "otsu",
        spatial_dims: int = 2,
    ):
        super().__init__(
            in_dim,
            n_outputs,
            hidden=hidden,
            layers=layers,
            kernel=kernel,
            dropout=dropout,
            pool=pool,
            r=r,
            topk=topk,
            negative_class=negative_class,
            threshold=threshold,
            spatial_dims=spatial_dims,
        )
        if pool not in ("lse", "topk", "mean"):
            raise ConfigError(f"wsseg pool must be lse, topk or mean, got {pool!r}")
        if spatial_dims not in (2, 3):
            raise ConfigError(f"wsseg spatial_dims must be 2 (slides) or 3 (volumes), got {spatial_dims!r}")
        check_threshold(threshold)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.fc = projection(in_dim, hidden, dropout)
        self.convs = nn.ModuleList([conv(hidden, hidden, kernel, padding=kernel // 2) for _ in range(layers)])
        self.drop = nn.Dropout(dropout)
        self.cam = conv(hidden, n_outputs, 1)

    def segmentation_map(self, x: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CAM logits on the grid's bounding box (C, rows, cols) — (C, z, y, x) for volumes —, the tissue
        cells of that box (bool) and the box's origin on the slide's (or volume's) grid."""
        cam, _, occupied, origin = self._cam(x, grid)
        return cam, occupied, origin

    def _cam(self, x: torch.Tensor, grid: torch.Tensor | None, box: GridBox | None = None) -> tuple[torch.Tensor, ...]:
        dims = self.options["spatial_dims"]
        if grid is None:
            raise ConfigError("the wsseg head needs the tiles' grid positions")
        if grid.shape[1] != dims:
            kind = "a volume's (z, y, x)" if grid.shape[1] == 3 else "a slide's (row, col)"
            raise ConfigError(
                f"this wsseg head segments {dims}D grids but the features lie on {kind} grid",
                fix=f"train with --head-opt spatial_dims={grid.shape[1]}",
            )
        h = self.fc(x)
        cells, shape, origin = grid_layout(grid.to(h.device), box)
        distinct = box.distinct if box is not None else len(torch.unique(cells)) == len(cells)
        if not distinct:
            raise ConfigError(
                "several tiles share one grid cell (e.g. volume slice patches of several planes)",
                fix="segment features of one plane at a time (tile volumes with --plane axial)",
            )
        n_cells = math.prod(shape)
        occupied = torch.zeros(n_cells, device=h.device, dtype=h.dtype).index_fill_(0, cells, 1).view(1, 1, *shape)
        fmap = h.new_zeros(n_cells, h.shape[1]).index_copy(0, cells, h).T.reshape(1, -1, *shape)
        for conv in self.convs:
            fmap = (fmap + self.drop(torch.relu(conv(fmap)))) * occupied
        return self.cam(fmap)[0], cells, occupied[0, 0].bool(), origin

    def forward(
        self,
        x: torch.Tensor,
        grid: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        box: GridBox | None = None,
    ) -> HeadOutput:
        cam, cells, _, _ = self._cam(x, grid, box)
        inst = cam.reshape(cam.shape[0], -1).T[cells]  # (N, C): the CAM at each tile's cell
        out = HeadOutput(self._pool(inst), inst)
        if not self.training and self.n_outputs > 1:  # one output (survival, proportion): no class mask
            neg = self.options["negative_class"]
            prob = torch.softmax(inst.float(), 1)
            out.tile_scores["mask"] = foreground_mask(
                1 - prob[:, neg], int(out.logits.argmax()) != neg, self.options["threshold"]
            )
        return out

    def _pool(self, inst: torch.Tensor) -> torch.Tensor:
        pool = self.options["pool"]
        if pool == "mean":
            return inst.mean(0)
        if pool == "topk":
            return topk_pool(inst, self.options["topk"])
        r = self.options["r"]
        return (torch.logsumexp(r * inst, 0) - math.log(inst.shape[0])) / r
