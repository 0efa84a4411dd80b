"""Volume tiling: volume (+ label map) → RAS grid at the target spacing → uint8 → patches → TileStore.

The same store format and machinery as slides (``create_store``, whole-shard writes, a temporary name
renamed into place, content-keyed re-runs); see docs/tilestore_format.md for what a volume store adds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import _provenance
from ..config import PLANES, StoreSpec, VolumeSpec, as_dict
from ..errors import GeometryMismatchError, UnsupportedSlideError
from ..io.inputs import slide_ids
from ..progress import progress_bar
from ..store import build as lifecycle
from ..store import codecs
from ..store.open import read_attrs
from ..store.result import failure_text
from ..store.shards import shard_key, write_shard
from ..store.tile_result import TileResult, tiles_folder
from ..store.tiles import FORMAT_VERSION, create_store, shard_tiles_of
from .foreground import foreground_mask
from .geometry import Grid, axcodes
from .intensity import intensity_range, to_uint8
from .patches import PatchGrid, box_fractions, crop, patch_grid
from .resample import resample
from .volume import ORIENTATION, Volume, open_volume

MAX_LABELS = 255


@dataclass(frozen=True)
class PreparedVolume:
    """A volume ready to cut: on ``grid`` (RAS, target spacing), as float intensities and as uint8."""

    grid: Grid
    image: np.ndarray  # float32 (z, y, x), resampled intensities
    data: np.ndarray  # uint8 (z, y, x), normalised: what patches are cut from
    foreground: np.ndarray  # bool (z, y, x)
    intensity: dict[str, Any]
    foreground_record: dict[str, Any]
    label: np.ndarray | None = None  # label map resampled (nearest) onto ``grid``
    label_values: tuple[int, ...] = ()


def prepare_volume(volume: Volume, spec: VolumeSpec, label: Volume | None = None) -> PreparedVolume:
    """Resample (linear; the label map nearest-neighbour) to ``spec.spacing_mm``, find the foreground,
    normalise to uint8. A label map must share the volume's grid (else :class:`GeometryMismatchError`)."""
    volume.require_3d()
    values: tuple[int, ...] = ()
    if label is not None:
        check_label(volume, label)
    grid = volume.grid.resampled(spec.spacing_mm)
    source = volume.array()
    image = resample(source, volume.grid, grid, "linear", default=float(source.min()) if source.size else 0.0)
    foreground, fg_record = foreground_mask(image, grid.spacing, spec)
    intensity = intensity_range(image, foreground, spec)
    data = to_uint8(image, intensity["lo"], intensity["hi"])
    resampled_label = None
    if label is not None:
        raw = label.array()
        values = _label_values(raw, label.path)
        resampled_label = resample(raw, label.grid, grid, "nearest", 0)
    return PreparedVolume(grid, image, data, foreground, intensity, fg_record, resampled_label, values)


def check_label(volume: Volume, label: Volume) -> None:
    """A label map must be 3D and on the image's voxel grid (shape, spacing, origin, axes)."""
    if label.n_timepoints > 1:
        raise UnsupportedSlideError("the label map is a 4D series", path=label.path, fix="give a 3D label volume")
    why = volume.grid.mismatch(label.grid)
    if why:
        raise GeometryMismatchError(
            f"the label map does not lie on the grid of its image {volume.path.name}: {why}",
            path=label.path,
            fix="use the label map saved on the image's grid (same size, spacing, origin and axes)",
        )


def patch_pixels(data: np.ndarray, start: np.ndarray, extent: np.ndarray, plane: int) -> np.ndarray:
    """The stored pixels of one patch: the (D, H, W) box, or for a slice patch its 2D cut as RGB (grey x3)."""
    box = crop(data, start, extent, fill=0)
    if plane < 0:
        return box
    grey = box.reshape([int(e) for i, e in enumerate(extent) if i != plane])
    return np.repeat(grey[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------------------------------
# tiling into a store


def tile_volume(
    path: str | Path,
    out_dir: str | Path,
    spec: VolumeSpec | None = None,
    store: StoreSpec | None = None,
    *,
    label: str | Path | None = None,
    timepoint: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> TileResult:
    """Tile one volume into ``<out_dir>/tiles/<volume_id>.zarr``; bad input raises a :class:`PathweakError`.

    Returns a :class:`~pathweak.tiling.TileResult`. Re-running skips a volume whose store is complete
    and was made from the same file content(s) and settings.
    """
    path = Path(path)
    with tiles_folder(out_dir):
        result = tile_volume_job(
            path,
            slide_ids([path])[0],
            Path(out_dir),
            spec or VolumeSpec(),
            store or StoreSpec(),
            None if label is None else Path(label),
            timepoint,
            force,
            progress,
        )
    if result.exception is not None:
        raise result.exception
    return result


def tile_volume_job(
    path: Path,
    volume_id: str,
    out_dir: Path,
    spec: VolumeSpec,
    store: StoreSpec,
    label: Path | None,
    timepoint: int | None,
    force: bool,
    progress: bool,
) -> TileResult:
    """Tile one volume (called by :func:`pathweak.tiling.run.tile_slides`); returns a TileResult, never raises
    a PathweakError (it is recorded in the result)."""
    started = time.perf_counter()
    final = out_dir / "tiles" / f"{volume_id}.zarr"
    tmp: Path | None = None
    try:
        volume = open_volume(path, timepoint=timepoint)
        volume.require_3d()
        label_volume = open_volume(label) if label is not None else None
        if label_volume is not None:
            check_label(volume, label_volume)
        existing = read_attrs(final)
        fingerprint = _fingerprint(volume.path, _recorded_fingerprint(existing))
        label_fp = _fingerprint(label_volume.path, None) if label_volume is not None else None
        store = replace(store, compression="lossless")
        key = _provenance.cache_key(
            format=FORMAT_VERSION,
            kind="volume",
            volume=fingerprint["content_hash"],
            label=label_fp["content_hash"] if label_fp else None,
            spec=as_dict(spec),
            store=as_dict(store),
            timepoint=volume.timepoint,
        )
        current = lifecycle.current_store(final, key, force)
        if current is not None:
            return TileResult(str(path), volume_id, "skipped", str(final), int(current["tile"]["n_tiles"]))
        prepared = prepare_volume(volume, spec, label_volume)
        patches = patch_grid(prepared.grid.shape, spec)
        fraction = box_fractions(prepared.foreground, patches.starts, patches.extents)
        keep = fraction >= spec.min_foreground if spec.min_foreground > 0 else np.ones(len(patches), bool)
        patches, fraction = patches.select(keep), fraction[keep]
        arrays = _arrays(prepared, patches, fraction, spec)
        attrs = _attrs(volume, label_volume, prepared, patches, spec, store, key, fingerprint, label_fp, volume_id)
        tmp = lifecycle.begin(final)
        tile_shape = spec.patch_shape if spec.mode == "3d" else (spec.patch_shape[1], spec.patch_shape[2], 3)
        names = ("tile", "z", "y", "x") if spec.mode == "3d" else ("tile", "y", "x", "rgb")
        create_store(
            tmp,
            len(patches),
            spec.patch_shape[1],
            store,
            arrays,
            attrs,
            tile_shape=tile_shape,
            fill_value=0,
            dimension_names=names,
            source="volume",
        )
        _write_tiles(tmp, prepared.data, patches, progress, volume_id)
        lifecycle.commit(tmp, final, store=True)
        return TileResult(str(path), volume_id, "tiled", str(final), len(patches), time.perf_counter() - started)
    except Exception as exc:
        lifecycle.discard(tmp)
        return TileResult(
            str(path),
            volume_id,
            "failed",
            seconds=time.perf_counter() - started,
            error=failure_text(path, exc),
            exception=exc,
        )


def _write_tiles(tmp: Path, data: np.ndarray, patches: PatchGrid, progress: bool, name: str) -> None:
    slots = shard_tiles_of(tmp)
    with progress_bar(len(patches), name, progress, unit="patches") as advance:
        for shard, lo in enumerate(range(0, len(patches), slots)):
            hi = min(len(patches), lo + slots)
            chunks = [
                codecs.encode_zstd(patch_pixels(data, patches.starts[i], patches.extents[i], int(patches.plane[i])))
                for i in range(lo, hi)
            ]
            write_shard(shard_key(tmp / "tiles", shard, 4), chunks, slots)
            advance(hi - lo)


def _arrays(
    prepared: PreparedVolume, patches: PatchGrid, fraction: np.ndarray, spec: VolumeSpec
) -> dict[str, np.ndarray]:
    arrays = {
        "coords": patches.starts.astype(np.int64),
        "grid_index": patches.grid_index,
        "tissue_fraction": fraction.astype(np.float32),
        "tissue_mask": prepared.foreground.astype(np.uint8),
        "thumbnail": _thumbnail(prepared.data),
    }
    if spec.mode == "slices":
        arrays["plane"] = patches.plane
    if prepared.label is not None:
        columns = [box_fractions(prepared.label == v, patches.starts, patches.extents) for v in prepared.label_values]
        arrays["label_fraction"] = (np.stack(columns, axis=1) if columns else np.zeros((len(patches), 0))).astype(
            np.float32
        )
    return arrays


def _attrs(
    volume: Volume,
    label: Volume | None,
    prepared: PreparedVolume,
    patches: PatchGrid,
    spec: VolumeSpec,
    store: StoreSpec,
    key: str,
    fingerprint: dict[str, Any],
    label_fp: dict[str, Any] | None,
    volume_id: str,
) -> dict[str, Any]:
    d, h, w = spec.patch_shape
    return {
        "cache_key": key,
        "source_id": volume_id,
        "volume": {
            "path": str(volume.path.resolve()),
            "fingerprint": fingerprint,
            "format": volume.format,
            "reader": volume.reader,
            "dimensions": list(volume.shape[::-1]),
            "orientation": ORIENTATION,
            "convention": "arrays and coords (z, y, x); affine maps voxel (x, y, z, 1) to RAS mm of the voxel centre",
            "source": {
                "shape_ijk": list(volume.source_shape),
                "affine": np.round(volume.source_affine, 12).tolist(),
                "axes": "".join(axcodes(volume.source_affine)),
                "dtype": volume.dtype,
                "timepoints": volume.n_timepoints,
                "timepoint": volume.timepoint,
                "orientation_transform": volume.ornt.astype(int).tolist(),
            },
            "canonical": volume.grid.to_attrs(),
            "grid": prepared.grid.to_attrs(),
            "spacing": list(prepared.grid.spacing),
            "origin": list(prepared.grid.origin),
            "direction": prepared.grid.direction.tolist(),
            "resample": {
                "library": "SimpleITK",
                "image": "linear",
                "label": "nearest",
                "target_spacing_zyx": list(spec.spacing_mm) if spec.spacing_mm else None,
            },
            "intensity": prepared.intensity,
            "foreground": prepared.foreground_record,
            "label": None
            if label is None
            else {
                "path": str(label.path.resolve()),
                "fingerprint": label_fp,
                "values": list(prepared.label_values),
                "fraction_columns": "label_fraction[:, c] = fraction of the patch's voxels with label values[c]",
            },
        },
        "tile": {
            **as_dict(spec),
            "layout": "zyx" if spec.mode == "3d" else "yxc",
            "patch_shape": [d, h, w],
            "patch_px": h,
            "read_px": h,
            "stride": list(spec.stride),
            "planes": list(spec.planes) if spec.mode == "slices" else None,
            "plane_names": list(PLANES),
            "n_tiles": len(patches),
            "min_tissue": spec.min_foreground,
            "coords": "(z, y, x) voxel index of the patch's first voxel on volume.grid",
        },
        "tissue": {
            "method": prepared.foreground_record["method"],
            "params": prepared.foreground_record,
            "slide_tissue_fraction": prepared.foreground_record["fraction"],
        },
        "storage": {**as_dict(store), "dtype": "uint8", "fill": 0},
        "versions": _provenance.versions("nibabel", "SimpleITK", "zarr", "scipy", "scikit-image"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _recorded_fingerprint(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The source fingerprint an existing volume store records (stores written before the store layer kept it in a
    made-up ``slide`` block)."""
    attrs = attrs or {}
    return (attrs.get("volume") or {}).get("fingerprint") or (attrs.get("slide") or {}).get("fingerprint")


def _thumbnail(data: np.ndarray) -> np.ndarray:
    """The middle axial, coronal and sagittal slices side by side, anterior/superior up (RGB uint8)."""
    z, y, x = (s // 2 for s in data.shape)
    views = [data[z][::-1], data[:, y][::-1], data[:, :, x][::-1]]
    height = max(v.shape[0] for v in views)
    row = np.concatenate([np.pad(v, ((0, height - v.shape[0]), (0, 2))) for v in views], axis=1)
    return np.repeat(row[:, :, None], 3, axis=2)


def _label_values(raw: np.ndarray, path: Path) -> tuple[int, ...]:
    """The non-zero label values of a label map (at most MAX_LABELS integers)."""
    values = np.unique(raw)
    values = values[values != 0]
    fix = f"give a label map of at most {MAX_LABELS} integer classes (0 = background)"
    if not np.all(np.mod(values, 1) == 0):
        raise UnsupportedSlideError("the label map holds non-integer values", path=path, fix=fix)
    if len(values) > MAX_LABELS:
        raise UnsupportedSlideError(f"the label map has {len(values)} distinct non-zero values", path=path, fix=fix)
    return tuple(int(v) for v in values)


def _fingerprint(path: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """A file's fingerprint, or for a DICOM series folder one over all its files."""
    if path.is_file():
        return _provenance.file_fingerprint(path, previous)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    hashes = [_provenance.content_hash(p) for p in files]
    return {
        "path": str(path.resolve()),
        "files": len(files),
        "size": sum(p.stat().st_size for p in files),
        "content_hash": "series:" + _provenance.cache_key(files=[p.name for p in files], hashes=hashes),
    }
