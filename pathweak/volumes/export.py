"""Per-patch scores of a volume TileStore written back as a NIfTI heatmap in the source file's geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..store.tiles import TileStore
from .geometry import Grid, apply_orientation, inverse_orientation


def patch_boxes(store: TileStore) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, extents)`` (N, 3) int64 of every patch of a volume store, (z, y, x) voxels on its grid."""
    _require_volume(store)
    starts = np.asarray(store.coords, np.int64)
    d, h, w = store.attrs["tile"]["patch_shape"]
    if store.attrs["tile"]["mode"] == "3d":
        return starts, np.tile(np.asarray([d, h, w], np.int64), (len(starts), 1))
    import zarr

    plane = np.asarray(zarr.open_array(str(store.path / "plane"), mode="r")[...], np.int64)
    extents = np.full((len(starts), 3), h, np.int64)
    extents[np.arange(len(starts)), plane] = 1
    return starts, extents


def score_volume(
    store: TileStore, scores: np.ndarray, reduce: Literal["mean", "max"] = "mean", background: float = np.nan
) -> np.ndarray:
    """Scores (N,) or (N, C) painted onto the store's grid (z, y, x[, C]) as float32; voxels covered by
    several patches get their mean (or max), voxels covered by none ``background``."""
    starts, extents = patch_boxes(store)
    values = np.asarray(scores, np.float32)
    if values.shape[:1] != (len(starts),) or values.ndim not in (1, 2):
        raise ConfigError(
            f"{values.shape} scores for a store of {len(starts)} patches",
            path=store.path,
            fix="pass one score (or one row of scores) per patch, in the store's order",
        )
    if reduce not in ("mean", "max"):
        raise ConfigError(f"unknown reduction {reduce!r}", fix="use 'mean' or 'max'")
    grid = Grid.from_attrs(store.attrs["volume"]["grid"])
    channels = values.shape[1:]
    acc = np.full((*grid.shape, *channels), -np.inf if reduce == "max" else 0.0, np.float32)
    count = np.zeros(grid.shape, np.int32)
    for start, extent, value in zip(starts, extents, values, strict=False):
        box = tuple(slice(int(s), int(s) + int(e)) for s, e in zip(start, extent, strict=False))
        if reduce == "max":
            np.maximum(acc[box], value, out=acc[box])
        else:
            acc[box] += value
        count[box] += 1
    covered = count > 0
    if reduce == "mean":
        acc[covered] /= count[covered][(...,) + (None,) * len(channels)]
    acc[~covered] = background
    return acc


def scores_to_nifti(
    store: TileStore | str | Path,
    scores: np.ndarray,
    out_path: str | Path,
    reduce: Literal["mean", "max"] = "mean",
    background: float = np.nan,
) -> Path:
    """Write per-patch ``scores`` of a volume store as a NIfTI heatmap with the source volume's affine.

    The heatmap has the source file's shape and voxel order (a 4th axis for (N, C) scores), so it
    overlays the original image in any viewer: each source voxel takes the value of the store-grid voxel
    its centre falls in (nearest neighbour), see :func:`score_volume`. ``out_path`` must end in ``.nii``
    or ``.nii.gz``; it is written under a temporary name and renamed.
    """
    import nibabel as nib

    if not isinstance(store, TileStore):
        store = TileStore.open(store)
    out_path = Path(out_path)
    suffix = (
        ".nii.gz"
        if out_path.name.lower().endswith(".nii.gz")
        else ".nii"
        if out_path.suffix.lower() == ".nii"
        else None
    )
    if suffix is None:
        raise ConfigError(
            "a NIfTI heatmap needs a .nii or .nii.gz name", path=out_path, fix="name it e.g. heatmap.nii.gz"
        )
    _require_volume(store)
    on_grid = score_volume(store, scores, reduce, background)
    attrs = store.attrs["volume"]
    canonical = Grid.from_attrs(attrs["canonical"])
    data = _to_grid(on_grid, Grid.from_attrs(attrs["grid"]), canonical, background)
    xyz = np.moveaxis(data, (0, 1, 2), (2, 1, 0))
    ornt = np.asarray(attrs["source"]["orientation_transform"], float)
    source = apply_orientation(xyz, inverse_orientation(ornt))
    affine = np.asarray(attrs["source"]["affine"], float)
    image = nib.Nifti1Image(np.ascontiguousarray(source, np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    from .._atomic import atomic_path

    with atomic_path(out_path) as tmp:  # keeps the .nii/.nii.gz suffix nibabel chooses the format by
        nib.save(image, str(tmp))
    return out_path


def _to_grid(data: np.ndarray, source: Grid, target: Grid, background: float) -> np.ndarray:
    """Nearest-neighbour values of ``data`` (on ``source``) at ``target``'s voxel centres. The two grids
    share their axes' directions (the store grid is a resampling of the canonical one), so each axis maps
    on its own."""
    m = np.linalg.solve(source.affine, target.affine)  # target index (x, y, z, 1) -> source index
    if np.abs(m[:3, :3] - np.diag(np.diag(m[:3, :3]))).max() > 1e-6:
        raise ValueError("the store grid is not axis-aligned with the source grid")
    out = np.full((*target.shape, *data.shape[3:]), background, np.float32)
    index = []
    valid = []
    for axis_zyx in range(3):
        a = 2 - axis_zyx  # (x, y, z) row of the affine
        idx = np.floor(m[a, a] * np.arange(target.shape[axis_zyx]) + m[a, 3] + 0.5).astype(np.int64)
        ok = (idx >= 0) & (idx < source.shape[axis_zyx])
        index.append(np.clip(idx, 0, source.shape[axis_zyx] - 1))
        valid.append(ok)
    picked = data[np.ix_(*index)]
    inside = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    out[inside] = picked[inside]
    return out


def _require_volume(store: TileStore) -> None:
    if not store.is_volume:
        raise ConfigError(
            "not a volume TileStore (it was tiled from a slide)",
            path=store.path,
            fix="use the 2D heatmap exporters for slides",
        )


def is_volume_results(source: str | Path) -> bool:
    """True when ``source`` is a results store of a volume (its coords are (z, y, x))."""
    from ..store.open import read_attrs

    source = Path(source)
    if not source.is_dir() or read_attrs(source) is None:
        return False
    meta = source / "coords" / "zarr.json"
    if not meta.exists():
        return False
    import json

    shape = json.loads(meta.read_text()).get("shape") or []
    return len(shape) == 2 and shape[1] == 3


def volume_results(source: str | Path, store: str | Path | None = None) -> tuple[TileStore, dict[str, np.ndarray], str]:
    """A volume's results store (``pathweak predict`` output) read once: its volume TileStore (``store``
    overrides the one the results name), every score in the store's patch order (matched by (z, y, x)
    coords; unscored patches NaN) and the volume's id."""
    from ..store.results import read_results

    table = read_results(source)
    tile_store = Path(store) if store is not None else table.tile_store
    if tile_store is None:
        raise ConfigError("the results store does not name its TileStore", path=source, fix="pass --store")
    volume = TileStore.open(tile_store)
    _require_volume(volume)
    index = {tuple(c): i for i, c in enumerate(np.asarray(volume.coords, np.int64).tolist())}
    rows = [index.get(tuple(c)) for c in np.asarray(table.coords, np.int64).tolist()]
    if any(r is None for r in rows):
        raise ConfigError(
            "the results list patches that are not in the TileStore",
            path=source,
            fix="pass the TileStore the features were extracted from with --store",
        )
    order = np.asarray(rows, np.int64)
    scores = {}
    for name, values in table.scores.items():
        scores[name] = np.full(len(volume), np.nan, np.float32)
        scores[name][order] = values
    return volume, scores, str(table.slide_id or volume.slide_id)


def results_to_nifti(
    source: str | Path,
    out_path: str | Path,
    score: str | None = None,
    store: str | Path | None = None,
    reduce: Literal["mean", "max"] = "mean",
) -> Path:
    """One score of a volume's results store (``pathweak predict`` output) as a NIfTI heatmap over the
    source volume (see :func:`scores_to_nifti`); ``store`` overrides the TileStore the results name."""
    volume, scores, _ = volume_results(source, store)
    return scores_to_nifti(volume, pick_score(scores, score, source), out_path, reduce=reduce)


def pick_score(scores: dict[str, np.ndarray], score: str | None, source: str | Path) -> np.ndarray:
    """The named score, or the only one; anything else is a clear error."""
    names = list(scores)
    if score is None and len(names) != 1:
        raise ConfigError(
            f"a NIfTI heatmap shows one score and there are {len(names)} ({', '.join(names)})",
            path=source,
            fix="pick one with --score",
        )
    name = score or names[0]
    if name not in scores:
        raise ConfigError(
            f"no score named {name} (the scores are: {', '.join(names)})",
            path=source,
            fix="pick one of those with --score",
        )
    return scores[name]
