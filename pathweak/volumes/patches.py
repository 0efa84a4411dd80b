"""Patch grids over a (z, y, x) voxel grid (pure numpy): 3D patches or 2D patches of slices.

A patch is a box: its first voxel ``start`` (z, y, x) and its ``extent`` (depth, height, width); a
2D slice patch is one voxel thick along its plane's normal (axial: z, coronal: y, sagittal: x). Along
each axis patches start at 0, stride, 2*stride... until the volume is covered: the last patch may run
past the far face and is padded there, so the whole volume is tiled even when it is not a multiple of
the stride (or smaller than one patch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import PLANES, VolumeSpec

PLANE_AXIS = {name: axis for axis, name in enumerate(PLANES)}  # axial 0 (z), coronal 1 (y), sagittal 2 (x)


@dataclass(frozen=True)
class PatchGrid:
    """Patches in storage order: ``starts`` (N, 3) int64 and ``extents`` (N, 3) int64, (z, y, x);
    ``plane`` (N,) int8 (-1 for 3D patches, else the index in ``PLANES``); ``grid_index`` (N, 3) int32
    is ``start // stride`` per axis."""

    starts: np.ndarray
    extents: np.ndarray
    plane: np.ndarray
    grid_index: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def select(self, keep: np.ndarray) -> PatchGrid:
        return PatchGrid(self.starts[keep], self.extents[keep], self.plane[keep], self.grid_index[keep])


def axis_starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Starts 0, stride, ... of patches covering ``size`` voxels (the last one may overhang)."""
    n = 1 if size <= patch else -(-(size - patch) // stride) + 1
    return np.arange(n, dtype=np.int64) * stride


def patch_grid(shape: tuple[int, int, int], spec: VolumeSpec) -> PatchGrid:
    """Every patch of ``spec`` over a volume of ``shape`` (z, y, x), before any foreground filter."""
    stride = spec.stride
    if spec.mode == "3d":
        patch = spec.patch_shape
        axes = [axis_starts(n, p, s) for n, p, s in zip(shape, patch, stride, strict=False)]
        starts = _product(axes)
        extents = np.broadcast_to(np.asarray(patch, np.int64), starts.shape).copy()
        plane = np.full(len(starts), -1, np.int8)
    else:
        px = spec.patch_shape[1]
        parts = []
        for name in spec.planes:
            axis = PLANE_AXIS[name]
            axes = [axis_starts(n, px, s) for n, s in zip(shape, stride, strict=False)]
            axes[axis] = np.arange(0, shape[axis], spec.slice_step, dtype=np.int64)
            extent = [px, px, px]
            extent[axis] = 1
            block = _product(axes)
            parts.append((block, np.broadcast_to(np.asarray(extent, np.int64), block.shape), axis))
        starts = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 3), np.int64)
        extents = np.concatenate([p[1] for p in parts]).astype(np.int64)
        plane = np.concatenate([np.full(len(p[0]), p[2], np.int8) for p in parts])
    grid_index = (starts // np.asarray(stride, np.int64)).astype(np.int32)
    return PatchGrid(starts.reshape(-1, 3), extents.reshape(-1, 3), plane, grid_index.reshape(-1, 3))


def box_fractions(mask: np.ndarray, starts: np.ndarray, extents: np.ndarray) -> np.ndarray:
    """Fraction of each box's voxels (N boxes) where ``mask`` is true; voxels past the volume count as
    false. Uses a summed-volume table, so it costs O(voxels + boxes)."""
    table = np.zeros(tuple(s + 1 for s in mask.shape), np.int64)
    table[1:, 1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    shape = np.asarray(mask.shape, np.int64)
    lo = np.minimum(starts, shape)
    hi = np.minimum(starts + extents, shape)
    total = np.zeros(len(starts), np.int64)
    for corner in range(8):
        pick = [(corner >> axis) & 1 for axis in range(3)]
        idx = tuple(np.where(pick[a], hi[:, a], lo[:, a]) for a in range(3))
        sign = -1 if (3 - sum(pick)) % 2 else 1
        total += sign * table[idx]
    return (total / np.prod(extents, axis=1)).astype(np.float32)


def crop(volume: np.ndarray, start: np.ndarray, extent: np.ndarray, fill: int = 0) -> np.ndarray:
    """The box ``start`` + ``extent`` of ``volume``; the part past the far faces is ``fill``."""
    out = np.full(tuple(int(e) for e in extent), fill, volume.dtype)
    region = volume[tuple(slice(int(s), int(s) + int(e)) for s, e in zip(start, extent, strict=False))]
    out[tuple(slice(0, n) for n in region.shape)] = region
    return out


def _product(axes: list[np.ndarray]) -> np.ndarray:
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64)
