"""Voxel grids in one convention: arrays (z, y, x), voxel axes reoriented to RAS, world in RAS mm.

A :class:`Grid` is a shape and a 4x4 affine. Following NIfTI, the affine maps the column vector
``(x, y, z, 1)`` of a voxel index to RAS+ millimetres (x towards the patient's Right, y Anterior,
z Superior) of the voxel's **centre**; the array itself is indexed ``[z, y, x]``. After
:func:`canonical_orientation` the voxel axes point (as closely as the acquisition allows) to R, A and
S, so the affine's 3x3 part is diagonal and positive for an axis-aligned scan, with the residual
rotation of an oblique one. Every reader ends up here, so a voxel index maps to the same physical
point whatever the file format (ITK's LPS world is converted with :func:`lps_to_ras`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """An index-to-world affine in ITK/DICOM LPS millimetres converted to RAS (the same matrix flips both)."""
    return LPS_TO_RAS @ np.asarray(affine_lps, float)


def itk_affine(spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]) -> np.ndarray:
    """The 4x4 LPS affine of ITK geometry (3D part of a 3D or 4D image)."""
    n = int(round(len(direction) ** 0.5))
    d = np.asarray(direction, float).reshape(n, n)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = d * np.asarray(spacing[:3], float)
    affine[:3, 3] = origin[:3]
    return affine


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (z, y, x) and the affine from index (x, y, z, 1) to RAS mm (voxel centres)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (z, y, x) in mm."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[2]), float(norms[1]), float(norms[0]))

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS mm (x, y, z) of the centre of voxel [0, 0, 0]."""
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS vectors of the x, y and z voxel axes."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)

    def index_to_world(self, zyx: np.ndarray) -> np.ndarray:
        """RAS mm (N, 3) as (x, y, z) of voxel indices (N, 3) given as (z, y, x); fractional indices allowed."""
        zyx = np.atleast_2d(np.asarray(zyx, float))
        return zyx[:, ::-1] @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, ras: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (N, 3) as (z, y, x) of RAS points (N, 3) given as (x, y, z)."""
        ras = np.atleast_2d(np.asarray(ras, float))
        xyz = np.linalg.solve(self.affine[:3, :3], (ras - self.affine[:3, 3]).T).T
        return xyz[:, ::-1]

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready description (shape and spacing (z, y, x); origin (x, y, z); direction; affine)."""
        return {
            "shape": list(self.shape),
            "spacing": [round(s, 9) for s in self.spacing],
            "origin": [round(o, 9) for o in self.origin],
            "direction": np.round(self.direction, 12).tolist(),
            "affine": np.round(self.affine, 12).tolist(),
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Grid:
        return cls(tuple(int(s) for s in attrs["shape"]), np.asarray(attrs["affine"], float))  # type: ignore[arg-type]

    def resampled(self, spacing_zyx: tuple[float, float, float] | None) -> Grid:
        """The grid covering the same physical box at ``spacing_zyx`` (None: this grid).

        Corners are kept: the new grid starts and ends at the outer faces of this grid's first and
        last voxels (so 25 slices of 6.5 mm become 162 slices of 1 mm covering the same 162.5 mm).
        The voxel axes keep their directions. An axis one voxel thick (a single 2D slice) keeps its
        spacing.
        """
        if spacing_zyx is None:
            return self
        old = np.asarray(self.spacing[::-1])  # (x, y, z)
        new = np.asarray(spacing_zyx[::-1], float)
        size = np.asarray(self.shape[::-1])
        new = np.where(size == 1, old, new)
        new_size = np.maximum(1, np.round(size * old / new)).astype(int)
        affine = np.eye(4)
        affine[:3, :3] = self.direction * new
        corner = self.affine[:3, 3] - self.direction @ (old / 2)  # outer corner of voxel 0
        affine[:3, 3] = corner + self.direction @ (new / 2)
        return Grid(tuple(int(s) for s in new_size[::-1]), affine)  # type: ignore[arg-type]

    def mismatch(self, other: Grid, tol_mm: float = 1e-3) -> str | None:
        """Why ``other`` is not the same grid (shape, spacing, origin or direction), or None."""
        if self.shape != other.shape:
            return f"shape (z, y, x) {_fmt(self.shape)} vs {_fmt(other.shape)}"
        ds = np.abs(np.subtract(self.spacing, other.spacing)).max()
        if ds > tol_mm:
            return f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm"
        do = float(np.linalg.norm(np.subtract(self.origin, other.origin)))
        if do > tol_mm:
            return f"origin differs by {do:.3g} mm"
        if np.abs(self.direction - other.direction).max() > 1e-4:
            return "voxel axes point in different directions"
        return None


def canonical_orientation(affine: np.ndarray, shape_xyz: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The nibabel orientation transform that brings an (x, y, z)-ordered array to RAS, and the new affine."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    return ornt, affine @ inv_ornt_aff(ornt, shape_xyz[:3])


def apply_orientation(data_xyz: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """An (x, y, z[, ...]) array reoriented by a nibabel orientation transform (flips and transposes)."""
    from nibabel.orientations import apply_orientation as _apply

    return _apply(data_xyz, ornt)


def inverse_orientation(ornt: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``ornt`` (input axis i went to axis ornt[i, 0], flipped when
    ornt[i, 1] is -1; so axis ornt[i, 0] goes back to i with the same flip)."""
    inverse = np.empty_like(np.asarray(ornt, float))
    for axis, (target, flip) in enumerate(ornt):
        inverse[int(target)] = (axis, flip)
    return inverse


def axcodes(affine: np.ndarray) -> list[str]:
    """Anatomical direction (RAS letters) of each voxel axis, e.g. ['L', 'P', 'S'] for ITK's usual grid."""
    from nibabel.orientations import aff2axcodes

    return [str(c) for c in aff2axcodes(affine)]


def _fmt(values: tuple[float, ...] | tuple[int, ...]) -> str:
    return "x".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)
