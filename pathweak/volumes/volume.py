"""``open_volume``: a 3D medical image in pathweak's one orientation convention (see ``geometry``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, SlideFormatError, SlideNotFoundError, UnsupportedSlideError
from ..io.detect import volume_format, volume_id
from .geometry import Grid, apply_orientation, axcodes, canonical_orientation
from .readers import SUPPORTED, VOLUME_READERS, RawVolume

ORIENTATION = "RAS"


class Volume:
    """A volume opened by :func:`open_volume`.

    ``grid`` is the voxel grid after reorientation to RAS: ``shape`` (z, y, x), ``spacing`` (z, y, x)
    mm, ``affine`` from index (x, y, z, 1) to RAS mm. ``array()`` returns the voxels in that order.
    ``source_affine`` / ``source_shape`` describe the file's own voxel order (used to write results
    back in the file's geometry). A 4D series needs a ``timepoint`` before its voxels are read.
    """

    def __init__(self, path: Path, fmt: str, reader: str, raw: RawVolume, timepoint: int | None):
        self.path = path
        self.format = fmt
        self.reader = reader
        self._raw = raw
        self.timepoint = timepoint
        self.ornt, canonical_affine = canonical_orientation(raw.affine, raw.shape_xyz)
        shape_xyz = [raw.shape_xyz[int(axis)] for axis in np.argsort(self.ornt[:, 0])]
        self.grid = Grid((shape_xyz[2], shape_xyz[1], shape_xyz[0]), canonical_affine)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def volume_id(self) -> str:
        return volume_id(self.path)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    @property
    def affine(self) -> np.ndarray:
        return self.grid.affine

    @property
    def source_shape(self) -> tuple[int, int, int]:
        """Spatial shape in the file's voxel order (i, j, k)."""
        return self._raw.shape_xyz

    @property
    def source_affine(self) -> np.ndarray:
        """The file's own index (i, j, k, 1) -> RAS mm affine."""
        return self._raw.affine

    @property
    def n_timepoints(self) -> int:
        return self._raw.n_timepoints

    @property
    def dtype(self) -> str:
        return self._raw.dtype

    # -- voxels ----------------------------------------------------------------------------------
    @cached_property
    def _array(self) -> np.ndarray:
        self.require_3d()
        data = np.asarray(self._raw.load(self.timepoint or 0))
        data = data.astype(data.dtype.newbyteorder("="), copy=False)  # big-endian files: native order
        return np.ascontiguousarray(apply_orientation(data, self.ornt).transpose(2, 1, 0))

    def array(self) -> np.ndarray:
        """The voxels (z, y, x) in RAS orientation, in the file's data type (read once, then cached)."""
        return self._array

    def require_3d(self) -> None:
        """Raise the clear 4D error (before any work) when the volume is a series and no timepoint was given."""
        if self.n_timepoints > 1 and self.timepoint is None:
            raise UnsupportedSlideError(
                f"a 4D series of {self.n_timepoints} timepoints "
                f"({'x'.join(map(str, self.source_shape))}x{self.n_timepoints}); pathweak tiles one 3D volume",
                path=self.path,
                fix=f"pass --timepoint N (0..{self.n_timepoints - 1}) to tile one timepoint",
            )

    def to_source_order(self, data_zyx: np.ndarray) -> np.ndarray:
        """An array on this volume's RAS grid (z, y, x[, c]) put back in the file's voxel order (i, j, k[, c])."""
        from .geometry import inverse_orientation

        xyz = np.moveaxis(data_zyx, (0, 1, 2), (2, 1, 0))
        return apply_orientation(xyz, inverse_orientation(self.ornt))

    def info(self) -> dict[str, Any]:
        """A summary, as ``pathweak info`` prints it (world coordinates in RAS mm)."""
        return {
            "path": str(self.path),
            "volume_id": self.volume_id,
            "format": self.format,
            "reader": self.reader,
            "orientation": f"arrays (z, y, x), voxel axes reoriented to {ORIENTATION}, world in RAS mm",
            "shape_zyx": list(self.shape),
            "spacing_zyx_mm": [round(s, 6) for s in self.spacing],
            "origin_ras_mm": [round(o, 4) for o in self.grid.origin],
            "direction": np.round(self.grid.direction, 6).tolist(),
            "source_shape_ijk": list(self.source_shape),
            "source_axes": "".join(axcodes(self.source_affine)),
            "timepoints": self.n_timepoints,
            "timepoint": self.timepoint,
            "dtype": self.dtype,
        }

    def __repr__(self) -> str:
        return f"Volume({str(self.path)!r}, shape_zyx={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)})"


def open_volume(path: str | Path, timepoint: int | None = None, reader: str = "auto") -> Volume:
    """Open a NIfTI, NRRD, MetaImage or DICOM volume (or a folder holding one DICOM series).

    ``reader="auto"`` uses nibabel for NIfTI and SimpleITK for everything else; ``"nibabel"`` or
    ``"simpleitk"`` force one. A 4D series opens (``info`` works) but its voxels need ``timepoint``;
    ``timepoint`` is ignored for a 3D volume. Errors name the file, the problem and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise SlideNotFoundError("file not found", path=path, fix="check the path and spelling")
    fmt = volume_format(path)
    if fmt is None:
        raise SlideFormatError("not a volume pathweak recognises", path=path, fix=f"pathweak reads {SUPPORTED}")
    if reader == "auto":
        reader = "nibabel" if fmt == "nifti" else "simpleitk"
    raw = VOLUME_READERS.get(reader)(path)
    if raw.n_timepoints == 1:
        timepoint = None
    elif timepoint is not None and not 0 <= timepoint < raw.n_timepoints:
        raise ConfigError(
            f"timepoint {timepoint} is out of range: the series has {raw.n_timepoints} (0..{raw.n_timepoints - 1})",
            path=path,
            fix=f"pass --timepoint between 0 and {raw.n_timepoints - 1}",
        )
    return Volume(path, fmt, reader, raw, timepoint)
