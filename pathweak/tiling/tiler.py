"""The tiler: slide → tissue mask → tile grid → TileStore, in parallel, atomically, resumably.

A slide is tiled in three steps that can run in different worker processes:

1. **plan** (one task per slide): open the slide, fingerprint it, skip it when a valid store with the
   same cache key exists, find tissue, build the grid and create the store's skeleton under a
   temporary name (``.<id>.zarr.partial-<pid>-<rand>``);
2. **tile** (one or more tasks per slide, each a range of shards): read source regions a patch row at a
   time, cut every patch they hold, resize when needed, encode shards in a background thread while
   the next region is decoded, and write each shard file atomically;
3. **finish** (main process): flag the store complete and rename it into place, replacing a stale one.

A failure at any step removes the temporary store; nothing half-written is ever left under the final
name, and a crashed run's leftovers are swept on the next run.
"""

from __future__ import annotations

import glob
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _provenance
from .._atomic import exit_with_owner, missing_dirs, owner_args, remove_if_empty, sweep_partials
from ..config import StoreSpec, TileSpec, TissueSpec, as_dict
from ..errors import ConfigError, SlideNotFoundError
from ..io import TiffTileReader, open_slide
from ..io.base import Slide
from ..progress import progress_bar
from ..store import build as lifecycle
from ..store.result import StageResult, failure_text
from ..tissue import segment_tissue
from . import codecs
from .grid import tile_grid
from .shards import shard_key, write_shard
from .store import FORMAT_VERSION, create_store, read_attrs

if TYPE_CHECKING:
    from ..config import VolumeSpec

SLIDE_EXTENSIONS = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".qptiff",
}


def auto_encode_threads(workers: int) -> int:
    """Encode threads per worker when not given: two where the cores allow it (encoding a JPEG 4:4:4
    q95 tile costs about 1.5x decoding its source), none where the workers already fill the cores."""
    cores = os.cpu_count() or 1
    if cores >= 2 * workers:
        return 2
    return 1 if cores > workers else 0


@dataclass(frozen=True)
class TileJob:
    """Everything needed to tile one slide (picklable, sent to worker processes)."""

    slide: str
    out_dir: str
    tile: TileSpec = field(default_factory=TileSpec)
    tissue: TissueSpec = field(default_factory=TissueSpec)
    store: StoreSpec = field(default_factory=StoreSpec)
    backend: str = "auto"
    mpp: float | str | None = None  # a number, None (the slide's own) or "estimate" (resolved before planning)
    mpp_record: dict[str, Any] | None = None  # estimate / check results recorded under the store's mpp attrs
    roi: str | None = None
    roi_classes: tuple[str, ...] | None = None
    fast_read: bool = True
    encode_threads: int = 1
    force: bool = False
    slide_id: str = ""

    @property
    def tiles_dir(self) -> Path:
        return Path(self.out_dir) / "tiles"

    @property
    def final_path(self) -> Path:
        return self.tiles_dir / f"{self.slide_id}.zarr"


@dataclass
class TilePlan:
    """The outcome of planning one slide: skip it, or tile ``n_tiles`` into ``tmp``."""

    job: TileJob
    key: str
    n_tiles: int = 0
    shard_tiles: int = 1
    tmp: str | None = None
    skipped: bool = False
    level: int = 0
    read_px: int = 0
    stride_level_px: int = 0
    level_downsample: tuple[float, float] = (1.0, 1.0)

    @property
    def n_shards(self) -> int:
        return -(-self.n_tiles // self.shard_tiles) if self.n_tiles else 0


@dataclass
class TileResult(StageResult):
    """What happened to one slide."""

    slide: str
    slide_id: str
    status: str  # "tiled" | "skipped" | "failed"
    store: str | None = None
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    warning: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------------------------------
# public API


def tile_slide(
    slide: str | Path,
    out_dir: str | Path,
    tile: TileSpec | None = None,
    tissue: TissueSpec | None = None,
    store: StoreSpec | None = None,
    *,
    backend: str = "auto",
    mpp: float | str | None = None,
    roi: str | Path | None = None,
    roi_classes: list[str] | None = None,
    workers: int = 1,
    fast_read: bool = True,
    encode_threads: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> TileResult:
    """Tile one slide into ``<out_dir>/tiles/<slide_id>.zarr``; bad input raises a :class:`PathweakError`.

    Re-running skips the slide when its store is complete and was made from the same file content and
    the same specs; a changed spec or file re-tiles it. ``workers`` > 1 splits the slide's shards over
    worker processes; in each, ``encode_threads`` threads encode tiles while the next region is decoded
    (default: :func:`auto_encode_threads`).
    """
    results = tile_slides(
        [slide],
        out_dir,
        tile,
        tissue,
        store,
        backend=backend,
        mpp=mpp,
        roi=roi,
        roi_classes=roi_classes,
        workers=workers,
        fast_read=fast_read,
        encode_threads=encode_threads,
        force=force,
        progress=progress,
    )
    result = results[0]
    if result.exception is not None:
        raise result.exception
    return result


def tile_slides(
    slides: list[str | Path],
    out_dir: str | Path,
    tile: TileSpec | None = None,
    tissue: TissueSpec | None = None,
    store: StoreSpec | None = None,
    *,
    backend: str = "auto",
    mpp: float | str | None = None,
    roi: str | Path | None = None,
    roi_classes: list[str] | None = None,
    workers: int = 1,
    fast_read: bool = True,
    encode_threads: int | None = None,
    force: bool = False,
    progress: bool = True,
    volume: VolumeSpec | None = None,
    label: str | Path | None = None,
    timepoint: int | None = None,
    slide_ids: list[str] | None = None,
) -> list[TileResult]:
    """Tile many slides; a slide that fails is reported in its result and the others go on.
    ``slide_ids`` names the stores (default: the file names without their extensions).
    ``mpp`` overrides every slide's level-0 resolution; ``"estimate"`` uses the resolution estimated from
    each slide's nuclei (:func:`pathweak.resolution.estimate_mpp`; the store records the source
    ``estimated`` and the range). With ``tile.mpp_check`` "warn" a slide whose resolution disagrees
    with its estimate gets a ``warning`` on its result; with "strict" it fails and nothing is written.

    3D volumes among the inputs (NIfTI, NRRD, MetaImage, DICOM CT/MR files or series folders; see
    :func:`pathweak.volumes.volume_format`) are tiled by :mod:`pathweak.volumes.tiler` with ``volume``
    (default :class:`VolumeSpec`), into the same ``tiles`` folder; ``label`` (a label map on the
    volume's grid) needs a single volume, ``timepoint`` picks one volume of 4D series.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}", fix="pass --workers 1 or more")
    if encode_threads is None:
        encode_threads = auto_encode_threads(workers)
    if encode_threads < 0:
        raise ConfigError(
            f"encode threads must be 0 or more, got {encode_threads}", fix="pass --encode-threads 0, 1, 2..."
        )
    from ..volumes.detect import volume_format

    paths = [Path(s) for s in slides]
    ids = list(slide_ids) if slide_ids is not None else _slide_ids(paths)
    if len(ids) != len(paths) or len(set(ids)) != len(ids):
        raise ConfigError("slide_ids must give one unique id per slide")
    is_volume = [volume_format(p) is not None for p in paths]
    if label is not None and sum(is_volume) != 1:
        raise ConfigError(
            f"a label map goes with exactly one volume, not {sum(is_volume)}",
            path=label,
            fix="tile each volume with its own --label",
        )
    jobs = [
        TileJob(
            slide=str(p),
            out_dir=str(out_dir),
            tile=tile or TileSpec(),
            tissue=tissue or TissueSpec(),
            store=store or StoreSpec(),
            backend=backend,
            mpp=mpp,
            roi=None if roi is None else str(roi),
            roi_classes=tuple(roi_classes) if roi_classes else None,
            fast_read=fast_read,
            encode_threads=encode_threads,
            force=force,
            slide_id=sid,
        )
        for p, sid, vol in zip(paths, ids, is_volume, strict=False)
        if not vol
    ]
    jobs, refused, warnings = _resolve_mpps(jobs)
    tiles_dir = Path(out_dir) / "tiles"
    sweep_partials(tiles_dir)
    created = missing_dirs(tiles_dir)
    try:
        done = dict(refused)
        if jobs:
            slide_results = _run_inline(jobs, progress) if workers == 1 else _run_pool(jobs, workers, progress)
            done = {(r.slide, r.slide_id): r for r in slide_results}
        volumes = [(p, sid) for p, sid, vol in zip(paths, ids, is_volume, strict=False) if vol]
        if volumes:
            done.update(
                _tile_volumes(
                    volumes,
                    Path(out_dir),
                    volume,
                    store or StoreSpec(),
                    None if label is None else Path(label),
                    timepoint,
                    force,
                    workers,
                    progress,
                )
            )
        for key, warning in warnings.items():
            done[key].warning = warning
        return [done[(str(p), sid)] for p, sid in zip(paths, ids, strict=False)]
    finally:
        sweep_partials(tiles_dir)  # again: writers of a killed run that were still exiting at the start are gone now
        remove_if_empty(created)  # leave no empty output folders behind when nothing was written


def _resolve_mpps(
    jobs: list[TileJob],
) -> tuple[list[TileJob], dict[tuple[str, str], TileResult], dict[tuple[str, str], str]]:
    """``mpp="estimate"`` and ``TileSpec.mpp_check``, resolved here before any planning (nothing is
    estimated when neither is asked for): the jobs to run, the slides refused (``--strict-mpp``, or no
    estimate possible) and a warning per slide whose resolution disagrees with its pixels."""
    from dataclasses import replace

    from ..resolution.check import resolve_tiling_mpp

    kept, refused, warnings = [], {}, {}
    for job in jobs:
        use_estimate = job.mpp == "estimate"
        if isinstance(job.mpp, str) and not use_estimate:
            raise ConfigError(
                f"mpp must be a number (um/px) or 'estimate', got {job.mpp!r}", fix="pass e.g. --mpp 0.25"
            )
        if not use_estimate and job.tile.mpp_check == "off":
            kept.append(job)
            continue
        started = time.perf_counter()
        try:
            with open_slide(job.slide, backend=job.backend, mpp=None if use_estimate else job.mpp) as slide:
                override, record, warning = resolve_tiling_mpp(slide, use_estimate, job.tile.mpp_check)
        except Exception as exc:  # noqa: BLE001 (recorded per slide; the others go on)
            refused[(job.slide, job.slide_id)] = _fail(job, exc, started)
            continue
        kept.append(replace(job, mpp=override if use_estimate else job.mpp, mpp_record=record))
        if warning:
            warnings[(job.slide, job.slide_id)] = warning
    return kept, refused, warnings


def _tile_volumes(
    volumes: list[tuple[Path, str]],
    out_dir: Path,
    spec: VolumeSpec | None,
    store: StoreSpec,
    label: Path | None,
    timepoint: int | None,
    force: bool,
    workers: int,
    progress: bool,
) -> dict[tuple[str, str], TileResult]:
    """Tile volumes one per worker process (in this process when there is one worker or one volume,
    with a per-volume progress bar); each result records its own failure, so one bad volume does not
    stop the others."""
    from ..config import VolumeSpec
    from ..volumes.tiler import tile_volume_job

    spec = spec or VolumeSpec()
    if workers == 1 or len(volumes) == 1:
        return {
            (str(p), sid): tile_volume_job(p, sid, out_dir, spec, store, label, timepoint, force, progress)
            for p, sid in volumes
        }
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[tuple[str, str], TileResult] = {}
    with (
        ProcessPoolExecutor(
            max_workers=min(workers, len(volumes)),
            mp_context=_pool_context(),
            initializer=exit_with_owner,
            initargs=owner_args(),
        ) as pool,
        progress_bar(len(volumes), "tiling volumes", progress, unit="volumes") as advance,
    ):
        futures = {
            pool.submit(tile_volume_job, p, sid, out_dir, spec, store, label, timepoint, force, False): (p, sid)
            for p, sid in volumes
        }
        try:
            for fut in as_completed(futures):
                p, sid = futures[fut]
                done[(str(p), sid)] = fut.result()
                advance(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return done


def expand_slide_paths(inputs: list[str | Path]) -> list[Path]:
    """Slides and volumes named by files, folders (their slide and volume files, non-recursive) or glob
    patterns.

    A folder of several ``.dcm`` files is one DICOM input (a DICOM-WSI slide, or a CT/MR series that
    the tiler reads as one volume); a name that matches nothing is an error.
    """
    out: list[Path] = []
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise SlideNotFoundError("the pattern matches no file", path=text, fix="check the pattern")
            out.extend(m for m in matches if m.is_file() and _is_input_file(m))
        elif Path(text).is_dir():
            folder = Path(text)
            files = sorted(p for p in folder.iterdir() if p.is_file() and _is_input_file(p))
            dcm = [p for p in files if p.suffix.lower() == ".dcm"]
            others = [p for p in files if p.suffix.lower() != ".dcm"]
            out.extend(others)
            if len(dcm) == 1:
                out.append(dcm[0])
            elif dcm:
                out.append(folder)
            elif not files and _is_dicom_series(folder):  # CT/MR slices often have no file extension
                out.append(folder)
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                if sum(1 for f in sub.iterdir() if f.suffix.lower() == ".dcm") > 1:
                    out.append(sub)
            if not out:
                raise SlideNotFoundError("the folder holds no slide files", path=folder, fix="check the folder")
        else:
            out.append(Path(text))
    return out


# --------------------------------------------------------------------------------------------------
# the three steps


def plan_tiling(job: TileJob) -> TilePlan:
    """Step 1: validate, fingerprint, maybe skip; else detect tissue, build the grid, create the skeleton.

    When the slide's size or mtime changed since the existing store was made, its content is hashed in
    a background thread while tissue is detected, so a changed slide costs no extra wall time.
    """
    with open_slide(job.slide, backend=job.backend, mpp=job.mpp) as slide, ThreadPoolExecutor(1) as hasher:
        existing = read_attrs(job.final_path)
        previous = (existing or {}).get("slide", {}).get("fingerprint")
        if _provenance.same_stat(slide.path, previous):  # unchanged file: no need to read it again
            fingerprint_future: Future[dict[str, Any]] = Future()
            fingerprint_future.set_result(_provenance.file_fingerprint(slide.path, previous))
        else:
            fingerprint_future = hasher.submit(_provenance.file_fingerprint, slide.path)
        roi_hash = _provenance.content_hash(job.roi) if job.roi and Path(job.roi).exists() else None

        def key_for(fingerprint: dict[str, Any]) -> str:
            return _provenance.cache_key(
                format=FORMAT_VERSION,
                slide=fingerprint["content_hash"],
                tile=as_dict(job.tile),
                tissue=as_dict(job.tissue) if job.roi is None else None,
                roi=roi_hash,
                roi_classes=job.roi_classes,
                store=as_dict(job.store),
                backend=job.backend,
                mpp=job.mpp,
                fast_read=job.fast_read,
            )

        def up_to_date(key: str) -> bool:
            return lifecycle.current_store(job.final_path, key, job.force) is not None

        if fingerprint_future.done() and up_to_date(key_for(fingerprint_future.result())):
            return TilePlan(job=job, key="", n_tiles=int(existing["tile"]["n_tiles"]), skipped=True)  # type: ignore[index]

        fast = TiffTileReader.for_slide(slide) if job.fast_read else None  # decodes the thumbnail level ~5x faster
        try:
            mask = segment_tissue(
                slide, job.tissue, roi=job.roi, roi_classes=list(job.roi_classes or []) or None, reader=fast
            )
        finally:
            if fast is not None:
                fast.close()
        grid = tile_grid(slide, mask, job.tile)
        choice = grid.choice
        fingerprint = fingerprint_future.result()
        key = key_for(fingerprint)
        if up_to_date(key):  # same bytes under a new mtime
            return TilePlan(job=job, key=key, n_tiles=int(existing["tile"]["n_tiles"]), skipped=True)  # type: ignore[index]
        attrs = {
            "cache_key": key,
            "slide": {
                "path": str(slide.path.resolve()),
                "slide_id": job.slide_id,
                "fingerprint": fingerprint,
                "backend": slide.backend,
                "reader": _reader_name(slide, job),
                "vendor": slide.vendor,
                "dimensions": list(slide.dimensions),
                "level_count": slide.level_count,
                "level_dimensions": [list(d) for d in slide.level_dimensions],
                "level_downsamples": list(slide.level_downsamples),
                "objective_power": slide.objective_power,
            },
            "mpp": {
                "level0": list(slide.mpp or ()),
                "source": slide.mpp_source,
                "metadata": list(slide.metadata_mpp or ()) or None,
                "target": job.tile.target_mpp,
                "level": choice.level,
                "level_mpp": list(choice.level_mpp),
                "level_downsample": list(grid.level_downsample),
                "achieved": list(choice.achieved_mpp),
            },
            "tile": {
                **as_dict(job.tile),
                "stride_px": job.tile.stride_px,
                "read_px": choice.read_px,
                "stride_level_px": choice.stride_level_px,
                "resized": choice.resize,
                "grid_shape": list(grid.grid_shape),
                "n_tiles": len(grid),
                "coords": "level-0 top-left (x, y) pixels",
            },
            "tissue": {
                "method": mask.method,
                "params": mask.params,
                "mask_downsample": list(mask.downsample),
                "slide_tissue_fraction": mask.tissue_fraction,
            },
            "storage": as_dict(job.store),
            "versions": _provenance.versions("openslide-python", "openslide-bin", "tiffslide", "zarr", "simplejpeg"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        attrs["mpp"].update(job.mpp_record or {})  # estimated source and range, metadata check (resolution/)
        tmp = lifecycle.begin(job.final_path)
        try:
            create_store(
                tmp,
                len(grid),
                job.tile.patch_px,
                job.store,
                arrays={
                    "coords": grid.coords,
                    "grid_index": grid.grid_index,
                    "tissue_fraction": grid.tissue_fraction,
                    "tissue_mask": mask.mask.astype(np.uint8),
                    "thumbnail": mask.thumbnail,
                },
                attrs=attrs,
            )
        except BaseException:
            lifecycle.discard(tmp)
            raise
        from .store import shard_tiles_of

        return TilePlan(
            job=job,
            key=key,
            n_tiles=len(grid),
            shard_tiles=shard_tiles_of(tmp),
            tmp=str(tmp),
            level=choice.level,
            read_px=choice.read_px,
            stride_level_px=choice.stride_level_px,
            level_downsample=grid.level_downsample,
        )


def tile_shards(plan: TilePlan, first: int, stop: int, on_shard: Any = None) -> int:
    """Step 2: fill shards ``first..stop-1`` of the planned store; returns the number of tiles written."""
    import zarr

    job = plan.job
    assert plan.tmp is not None
    tmp = Path(plan.tmp)
    lo, hi = first * plan.shard_tiles, min(plan.n_tiles, stop * plan.shard_tiles)
    grid_index = np.asarray(zarr.open_array(str(tmp / "grid_index"), mode="r")[lo:hi])
    level_xy = grid_index[:, ::-1].astype(np.int64) * plan.stride_level_px
    encode = codecs.encoder_for(job.store)
    slide, reader = _open_cached(job)
    written = 0
    # encoding runs in ``encode_threads`` threads while this thread decodes the next shard's source
    # tiles (both release the GIL); 0 encodes inline. At most threads + 1 shards wait, so memory is bounded.
    with ThreadPoolExecutor(max_workers=max(1, job.encode_threads)) as pool:
        pending: deque[Future[None]] = deque()
        for shard in range(first, stop):
            s0, s1 = shard * plan.shard_tiles - lo, min(hi, (shard + 1) * plan.shard_tiles) - lo
            tiles = _cut_tiles(reader, slide, plan, level_xy[s0:s1])
            path = shard_key(tmp / "tiles", shard, 4)
            if job.encode_threads == 0:
                _encode_and_write(path, tiles, encode, plan.shard_tiles)
            else:
                pending.append(pool.submit(_encode_and_write, path, tiles, encode, plan.shard_tiles))
                while len(pending) > job.encode_threads:
                    pending.popleft().result()
            written += len(tiles)
            if on_shard is not None:
                on_shard(len(tiles))
        while pending:
            pending.popleft().result()
    return written


def finish_tiling(plan: TilePlan) -> Path:
    """Step 3: flag the store complete and move it into place (replacing a stale store)."""
    assert plan.tmp is not None
    return lifecycle.commit(Path(plan.tmp), plan.job.final_path, store=True)


def discard(plan: TilePlan | None) -> None:
    """Remove a plan's temporary store."""
    if plan is not None and plan.tmp:
        lifecycle.discard(Path(plan.tmp))


# --------------------------------------------------------------------------------------------------
# reading and cutting


class _SlideLevelReader:
    """Level-pixel reads through the slide backend (used where direct tile decoding does not apply)."""

    def __init__(self, slide: Slide):
        self.slide = slide

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.slide.level_downsamples[level]
        return self.slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))


def _cut_tiles(reader: Any, slide: Slide, plan: TilePlan, level_xy: np.ndarray) -> np.ndarray:
    """Patches at level coordinates ``level_xy``.

    The direct tile reader copies each patch straight out of its cache of decoded source tiles (each
    source tile is decoded once); other readers get one region read per run of adjacent patches in a
    row, which is then cut.
    """
    import cv2

    t, read = plan.job.tile.patch_px, plan.read_px
    out = np.empty((len(level_xy), t, t, 3), np.uint8)
    if isinstance(reader, TiffTileReader):
        scratch = np.empty((read, read, 3), np.uint8) if read != t else None
        for i, (x, y) in enumerate(level_xy):
            if scratch is None:
                reader.read(plan.level, int(x), int(y), read, read, out=out[i])
            else:
                reader.read(plan.level, int(x), int(y), read, read, out=scratch)
                cv2.resize(scratch, (t, t), dst=out[i], interpolation=cv2.INTER_AREA)
        return out
    starts = [0]
    for i in range(1, len(level_xy)):
        same_row = level_xy[i, 1] == level_xy[i - 1, 1]
        adjacent = level_xy[i, 0] - level_xy[i - 1, 0] == plan.stride_level_px
        if not (same_row and adjacent):
            starts.append(i)
    starts.append(len(level_xy))
    for a, b in zip(starts[:-1], starts[1:], strict=False):
        x0, y0 = int(level_xy[a, 0]), int(level_xy[a, 1])
        region = reader.read(plan.level, x0, y0, int(level_xy[b - 1, 0]) - x0 + read, read)
        for i in range(a, b):
            off = int(level_xy[i, 0]) - x0
            crop = region[:, off : off + read]
            out[i] = crop if read == t else cv2.resize(crop, (t, t), interpolation=cv2.INTER_AREA)
    return out


def _encode_and_write(path: Path, tiles: np.ndarray, encode: Any, slots: int) -> None:
    write_shard(path, [encode(t) for t in tiles], slots)


_WORKER_SLIDES: dict[tuple[Any, ...], tuple[Slide, Any]] = {}


def _open_cached(job: TileJob) -> tuple[Slide, Any]:
    """The slide and its level reader, kept open across tasks of the same slide in this process."""
    key = (job.slide, job.backend, job.mpp, job.fast_read)
    if key not in _WORKER_SLIDES:
        while _WORKER_SLIDES:
            slide, reader = _WORKER_SLIDES.pop(next(iter(_WORKER_SLIDES)))
            if hasattr(reader, "close"):
                reader.close()
            slide.close()
        slide = open_slide(job.slide, backend=job.backend, mpp=job.mpp)
        fast = TiffTileReader.for_slide(slide) if job.fast_read else None
        _WORKER_SLIDES[key] = (slide, fast or _SlideLevelReader(slide))
    return _WORKER_SLIDES[key]


def _close_cached() -> None:
    for slide, reader in _WORKER_SLIDES.values():
        if hasattr(reader, "close"):
            reader.close()
        slide.close()
    _WORKER_SLIDES.clear()


def _reader_name(slide: Slide, job: TileJob) -> str:
    if job.fast_read:
        fast = TiffTileReader.for_slide(slide)
        if fast is not None:
            fast.close()
            return "tiff-tiles"
    return slide.backend


# --------------------------------------------------------------------------------------------------
# running jobs


def _fail(job: TileJob, exc: BaseException, started: float) -> TileResult:
    """A failed result; an unexpected error (not a PathweakError) is reported with its type too."""
    text = failure_text(job.slide, exc)
    return TileResult(
        job.slide, job.slide_id, "failed", seconds=time.perf_counter() - started, error=text, exception=exc
    )


def _run_inline(jobs: list[TileJob], progress: bool) -> list[TileResult]:
    results = []
    with progress_bar(0, "tiling", progress) as advance:
        for job in jobs:
            started = time.perf_counter()
            plan = None
            try:
                plan = plan_tiling(job)
                if plan.skipped:
                    results.append(TileResult(job.slide, job.slide_id, "skipped", str(job.final_path), plan.n_tiles))
                    continue
                advance(0, description=job.slide_id, total=plan.n_tiles)
                tile_shards(plan, 0, plan.n_shards, on_shard=lambda n: advance(n))
                final = finish_tiling(plan)
                results.append(
                    TileResult(
                        job.slide, job.slide_id, "tiled", str(final), plan.n_tiles, time.perf_counter() - started
                    )
                )
            except KeyboardInterrupt:
                discard(plan)
                raise
            except Exception as exc:
                discard(plan)
                results.append(_fail(job, exc, started))
            finally:
                _close_cached()
    return results


def _run_pool(jobs: list[TileJob], workers: int, progress: bool) -> list[TileResult]:
    """Plans and shard ranges of all slides share one process pool; at most ``workers + 1`` slides
    are in flight so temporary stores do not pile up. The first slide is planned here while the
    workers start, so a single large slide does not wait for the pool before its planning begins."""
    from concurrent.futures import ProcessPoolExecutor

    with (
        ProcessPoolExecutor(
            max_workers=workers, mp_context=_pool_context(), initializer=exit_with_owner, initargs=owner_args()
        ) as pool,
        progress_bar(0, "tiling", progress) as advance,
    ):
        run = _PoolRun(pool, jobs, workers, advance)
        try:
            run.go()
        except BaseException:
            run.abort()
            raise
    return [run.results[j.slide] for j in jobs]


class _PoolRun:
    """Book-keeping of one pooled tiling run: which futures belong to which slide and step."""

    def __init__(self, pool: Any, jobs: list[TileJob], workers: int, advance: Any):
        self.pool, self.workers, self.advance = pool, workers, advance
        self.jobs = {j.slide: j for j in jobs}
        self.queue = deque(jobs)
        self.results: dict[str, TileResult] = {}
        self.started: dict[str, float] = {}
        self.plans: dict[str, TilePlan] = {}
        self.remaining: dict[str, int] = {}
        self.futures: dict[Future[Any], tuple[str, str]] = {}

    def go(self) -> None:
        import threading
        from concurrent.futures import FIRST_COMPLETED, wait

        # start the workers (the forkserver's start blocks for a moment) while this thread plans slide 1
        starter = threading.Thread(target=lambda: [self.pool.submit(_warm_up) for _ in range(self.workers)])
        starter.start()
        first = self.queue.popleft()
        self.started[first.slide] = time.perf_counter()
        self._submit_plans()
        try:
            plan = plan_tiling(first)
        except Exception as exc:
            plan = None
            self._failed(first.slide, exc)
        starter.join()
        if plan is not None:
            self._planned(first.slide, plan)
        self._submit_plans()
        while self.futures:
            done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
            for fut in done:
                slide, step = self.futures.pop(fut)
                try:
                    value = fut.result()
                except Exception as exc:
                    if step == "tile":
                        self.remaining[slide] -= 1
                    self._failed(slide, exc)
                    continue
                if step == "plan":
                    self._planned(slide, value)
                else:
                    self.remaining[slide] -= 1
                    if slide not in self.results:
                        self.advance(int(value), description=self.jobs[slide].slide_id)
                    self._maybe_finish(slide)
            self._submit_plans()

    def _submit_plans(self) -> None:
        while self.queue and len(self.started) - len(self.results) < self.workers + 1:
            job = self.queue.popleft()
            self.started[job.slide] = time.perf_counter()
            self.futures[self.pool.submit(plan_tiling, job)] = (job.slide, "plan")

    def _planned(self, slide: str, plan: TilePlan) -> None:
        job = self.jobs[slide]
        if plan.skipped:
            self.results[slide] = TileResult(slide, job.slide_id, "skipped", str(job.final_path), plan.n_tiles)
            return
        self.plans[slide] = plan
        self.advance(0, total=plan.n_tiles)
        ranges = _split(plan.n_shards, self.workers)
        self.remaining[slide] = len(ranges)
        for a, b in ranges:
            self.futures[self.pool.submit(tile_shards, plan, a, b)] = (slide, "tile")
        self._maybe_finish(slide)

    def _failed(self, slide: str, exc: BaseException) -> None:
        if slide not in self.results:
            self.results[slide] = _fail(self.jobs[slide], exc, self.started[slide])
        self._maybe_finish(slide)

    def _maybe_finish(self, slide: str) -> None:
        """Once no task of the slide is running: move its store into place, or drop it after a failure."""
        if self.remaining.get(slide, 0) > 0:
            return
        plan = self.plans.pop(slide, None)
        if plan is None:
            return
        if slide in self.results:  # failed
            discard(plan)
            return
        job = self.jobs[slide]
        try:
            final = finish_tiling(plan)
            elapsed = time.perf_counter() - self.started[slide]
            self.results[slide] = TileResult(slide, job.slide_id, "tiled", str(final), plan.n_tiles, elapsed)
        except Exception as exc:
            discard(plan)
            self.results[slide] = _fail(job, exc, self.started[slide])

    def abort(self) -> None:
        for fut in self.futures:
            fut.cancel()
        for plan in self.plans.values():
            discard(plan)


def _warm_up() -> None:
    """A no-op task: submitting one per worker makes the pool start its processes right away."""


def _pool_context() -> Any:
    """Worker processes fork from a forkserver that has the tiler imported: safe whatever threads this
    process runs (unlike fork) and without re-importing everything per worker (unlike spawn)."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pathweak.tiling.tiler", "openslide", "tifffile", "simplejpeg", "cv2"])
    return ctx


def _split(n_shards: int, workers: int) -> list[tuple[int, int]]:
    """Shard ranges: about four per worker, at least four shards each (fewer for small slides)."""
    if n_shards == 0:
        return []
    per = max(4, -(-n_shards // (workers * 4)))
    if n_shards < 4 * workers:
        per = max(1, -(-n_shards // workers))
    return [(a, min(n_shards, a + per)) for a in range(0, n_shards, per)]


def _is_input_file(path: Path) -> bool:
    """A slide or volume file by its name (``.svs``, ``.nii.gz``, ``.nrrd``...)."""
    from ..volumes.detect import volume_suffix

    return path.suffix.lower() in SLIDE_EXTENSIONS or volume_suffix(path) is not None


def _is_dicom_series(folder: Path) -> bool:
    from ..volumes.detect import volume_format

    return volume_format(folder) == "dicom-series"


def _slide_ids(paths: list[Path]) -> list[str]:
    from ..volumes.detect import volume_suffix

    ids = []
    for p in paths:
        name = p.name
        for ext in (".ome.tiff", ".ome.tif", *filter(None, [volume_suffix(p)])):  # .nii.gz is one extension
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
                break
        else:
            name = p.stem if p.suffix and not p.is_dir() else p.name
        ids.append(name)
    seen: dict[str, Path] = {}
    for sid, p in zip(ids, paths, strict=False):
        if sid in seen and seen[sid] != p:
            raise ConfigError(
                f"two slides share the id {sid!r} ({seen[sid]} and {p})",
                fix="rename one, or tile them into different --out folders",
            )
        seen[sid] = p
    return ids
