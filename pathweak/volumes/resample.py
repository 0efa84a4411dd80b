"""Resampling a (z, y, x) array from one :class:`Grid` to another with SimpleITK (C++, multithreaded).

SimpleITK is used rather than MONAI's ``Spacing`` because it needs no torch (``pathweak tile`` must start
fast) and resamples between arbitrary grids given their affines. Both grids' affines are passed to ITK
as they are: ITK never looks at which world frame (RAS here) the numbers are in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from .geometry import Grid

if TYPE_CHECKING:
    import SimpleITK as sitk

Interpolator = Literal["linear", "nearest"]


def resample(
    array: np.ndarray, source: Grid, target: Grid, interpolator: Interpolator = "linear", default: float = 0.0
) -> np.ndarray:
    """``array`` (on ``source``) sampled at the voxel centres of ``target``.

    ``linear`` interpolation returns float32 (for images); ``nearest`` keeps the data type (for label
    maps). Points outside the source's outer voxel faces get ``default``; points between the outermost
    voxel centres and those faces take the edge value. The identical grid returns the array unchanged.
    """
    if source.shape == target.shape and np.allclose(source.affine, target.affine, atol=1e-9):
        return array.astype(np.float32) if interpolator == "linear" else array
    import SimpleITK as sitk

    data = array.astype(np.float32) if interpolator == "linear" else array
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    image = _to_itk(data, source)
    out = sitk.Resample(
        image,
        target.shape[::-1],
        sitk.Transform(),
        sitk.sitkLinear if interpolator == "linear" else sitk.sitkNearestNeighbor,
        target.origin,
        target.spacing[::-1],
        tuple(target.direction.ravel()),
        float(default),
        image.GetPixelID(),
    )
    result = sitk.GetArrayFromImage(out)
    return result.astype(array.dtype) if array.dtype == np.bool_ else result


def _to_itk(data: np.ndarray, grid: Grid) -> sitk.Image:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    image.SetSpacing(grid.spacing[::-1])
    image.SetOrigin(grid.origin)
    image.SetDirection(tuple(grid.direction.ravel()))
    return image
