"""Planning one slide (step 1 of tiling) and what it records: the job, the plan, the store's metadata.

Planning opens the slide (through :mod:`.readers`, so the cutting step in the same process reuses the
open file), fingerprints it, skips it when a valid store with the same cache key exists, finds tissue,
builds the grid and creates the store's skeleton under a temporary name
(``.<id>.zarr.partial-<host>-<pid>-...``).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import _provenance
from ..config import StoreSpec, TileOptions, TileSpec, TissueSpec, as_dict
from ..cpus import available_cpus
from ..errors import ConfigError
from ..io import open_slide
from ..io.base import Slide
from ..store import build as lifecycle
from ..store.open import read_attrs
from ..store.tile_result import TileResult, failed_result
from ..store.tiles import FORMAT_VERSION, create_store, shard_tiles_of
from ..tissue import TissueMask, segment_tissue
from .grid import TileGrid, tile_grid
from .readers import OpenedSlide, close_cached, open_cached


def auto_encode_threads(workers: int) -> int:
    """Encode threads per worker when not given: two where the cores allow it (encoding a JPEG 4:4:4
    q95 tile costs about 1.5x decoding its source), none where the workers already fill the cores."""
    cores = available_cpus()
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
    options: TileOptions = field(default_factory=TileOptions)  # mpp "estimate" is resolved before planning
    mpp_record: dict[str, Any] | None = None  # estimate / check results recorded under the store's mpp attrs
    slide_id: str = ""

    @property
    def level0_mpp(self) -> float | None:
        """The level-0 resolution override once ``"estimate"`` has been resolved (None: the slide's own)."""
        if isinstance(self.options.mpp, str):
            raise ConfigError(f"mpp {self.options.mpp!r} is not resolved to a number", fix="pass e.g. --mpp 0.25")
        return self.options.mpp

    @property
    def encode_threads(self) -> int:
        """Threads encoding tiles beside this worker's decoding (the options' number, else the automatic one)."""
        threads = self.options.encode_threads
        return auto_encode_threads(self.options.workers) if threads is None else threads

    @property
    def tiles_dir(self) -> Path:
        return Path(self.out_dir) / "tiles"

    @property
    def final_path(self) -> Path:
        return self.tiles_dir / f"{self.slide_id}.zarr"


@dataclass
class TilePlan:
    """The outcome of planning one slide: skip it, or tile ``n_tiles`` into ``tmp``. ``timings``:
    seconds of planning (``plan``) and of creating the store's skeleton (``create``)."""

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
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_shards(self) -> int:
        return -(-self.n_tiles // self.shard_tiles) if self.n_tiles else 0


def plan_tiling(job: TileJob, keep_open: bool = True) -> TilePlan:
    """Step 1: validate, fingerprint, maybe skip; else detect tissue, build the grid, create the skeleton.

    When the slide's size or mtime changed since the existing store was made, its content is hashed in
    a background thread while tissue is detected, so a changed slide costs no extra wall time. With
    ``keep_open`` the slide stays open in this process for :func:`~pathweak.tiling.cut.tile_shards`.
    """
    started = time.perf_counter()
    try:
        opened = open_cached(job)
        with ThreadPoolExecutor(1) as hasher:
            plan = _plan(job, opened, hasher)
    except BaseException:
        close_cached(job)
        raise
    if not keep_open or plan.skipped:
        close_cached(job)
    plan.timings["plan"] = time.perf_counter() - started - plan.timings.get("create", 0.0)
    return plan


def _plan(job: TileJob, opened: OpenedSlide, hasher: ThreadPoolExecutor) -> TilePlan:
    slide = opened.slide
    existing = read_attrs(job.final_path)
    previous = (existing or {}).get("slide", {}).get("fingerprint")
    if _provenance.same_stat(slide.path, previous):  # unchanged file: no need to read it again
        fingerprint_future: Future[dict[str, Any]] = Future()
        fingerprint_future.set_result(_provenance.file_fingerprint(slide.path, previous))
    else:
        fingerprint_future = hasher.submit(_provenance.file_fingerprint, slide.path)
    options = job.options
    roi_hash = _provenance.content_hash(options.roi) if options.roi and Path(options.roi).exists() else None

    def key_for(fingerprint: dict[str, Any]) -> str:
        return _provenance.cache_key(
            format=FORMAT_VERSION,
            slide=fingerprint["content_hash"],
            tile=as_dict(job.tile),
            tissue=as_dict(job.tissue) if options.roi is None else None,
            roi=roi_hash,
            roi_classes=options.roi_classes,
            store=as_dict(job.store),
            backend=options.backend,
            mpp=options.mpp,
            fast_read=options.fast_read,
        )

    def up_to_date(key: str) -> bool:
        return lifecycle.current_store(job.final_path, key, options.force) is not None

    if fingerprint_future.done() and up_to_date(key_for(fingerprint_future.result())):
        return TilePlan(job=job, key="", n_tiles=int(existing["tile"]["n_tiles"]), skipped=True)  # type: ignore[index]

    fast = opened.reader if opened.reader_name == "tiff-tiles" else None  # the thumbnail level ~5x faster
    roi_classes = list(options.roi_classes or []) or None
    mask = segment_tissue(slide, job.tissue, roi=options.roi, roi_classes=roi_classes, reader=fast)
    grid = tile_grid(slide, mask, job.tile)
    fingerprint = fingerprint_future.result()
    key = key_for(fingerprint)
    if up_to_date(key):  # same bytes under a new mtime
        return TilePlan(job=job, key=key, n_tiles=int(existing["tile"]["n_tiles"]), skipped=True)  # type: ignore[index]
    attrs = store_attrs(job, slide, opened.reader_name, key, fingerprint, mask, grid)
    created = time.perf_counter()
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
                **({} if mask.thumbnail is None else {"thumbnail": mask.thumbnail}),
                **({} if mask.artifacts is None else {"artifact_mask": mask.artifacts}),
            },
            attrs=attrs,
        )
    except BaseException:
        lifecycle.discard(tmp)
        raise
    choice = grid.choice
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
        timings={"create": time.perf_counter() - created},
    )


def store_attrs(
    job: TileJob,
    slide: Slide,
    reader: str,
    key: str,
    fingerprint: dict[str, Any],
    mask: TissueMask,
    grid: TileGrid,
) -> dict[str, Any]:
    """The attributes a slide's TileStore records (see docs/tilestore_format.md)."""
    choice = grid.choice
    attrs: dict[str, Any] = {
        "cache_key": key,
        "slide": {
            "path": str(slide.path.resolve()),
            "slide_id": job.slide_id,
            "fingerprint": fingerprint,
            "backend": slide.backend,
            "reader": reader,
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
    return attrs


def resolve_mpps(
    jobs: list[TileJob],
) -> tuple[list[TileJob], dict[tuple[str, str], TileResult], dict[tuple[str, str], str]]:
    """``mpp="estimate"`` and ``TileSpec.mpp_check``, resolved here before any planning (nothing is
    estimated when neither is asked for): the jobs to run, the slides refused (``--strict-mpp``, or no
    estimate possible) and a warning per slide whose resolution disagrees with its pixels."""
    from ..resolution.check import resolve_tiling_mpp

    kept: list[TileJob] = []
    refused: dict[tuple[str, str], TileResult] = {}
    warnings: dict[tuple[str, str], str] = {}
    for job in jobs:
        use_estimate = job.options.mpp == "estimate"  # TileOptions admits no other text
        if not use_estimate and job.tile.mpp_check == "off":
            kept.append(job)
            continue
        started = time.perf_counter()
        try:
            mpp = None if use_estimate else job.level0_mpp
            with open_slide(job.slide, backend=job.options.backend, mpp=mpp) as slide:
                override, record, warning = resolve_tiling_mpp(slide, use_estimate, job.tile.mpp_check)
        except Exception as exc:  # noqa: BLE001 (recorded per slide; the others go on)
            refused[(job.slide, job.slide_id)] = failed_result(job.slide, job.slide_id, exc, started)
            continue
        options = replace(job.options, mpp=override) if use_estimate else job.options
        kept.append(replace(job, options=options, mpp_record=record))
        if warning:
            warnings[(job.slide, job.slide_id)] = warning
    return kept, refused, warnings
