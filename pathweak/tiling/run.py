"""The tiling entry point over both tilers: which inputs are 2D slides (:mod:`.slides`) and
which are 3D volumes (:mod:`pathweak.volumes.tiler`), each sent to its tiler, the results in input
order. The volume tiler is on the floor below (it imports nothing of the slide tiler), and this module
is the one place that reaches it; ``pathweak.tiling`` exports both functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import StoreSpec, TileOptions, TileSpec, TissueSpec, with_fields
from ..errors import ConfigError
from ..io.inputs import slide_ids as default_ids
from ..progress import log_line, progress_bar
from ..store.tile_result import TileResult, empty_store_warning, tiles_folder
from .slides import tile_slide_files

if TYPE_CHECKING:
    from ..config import VolumeSpec


def tile_slide(
    slide: str | Path,
    out_dir: str | Path,
    tile: TileSpec | None = None,
    tissue: TissueSpec | None = None,
    store: StoreSpec | None = None,
    options: TileOptions | None = None,
    *,
    progress: bool = True,
    **option_fields: Any,
) -> TileResult:
    """Tile one slide into ``<out_dir>/tiles/<slide_id>.zarr``; bad input raises a :class:`PathweakError`.

    Re-running skips the slide when its store is complete and was made from the same file content and
    the same specs; a changed spec or file re-tiles it. ``options`` (:class:`~pathweak.config.TileOptions`:
    reader, resolution override, ROI, workers, encode threads, force) can also be given field by field
    (``workers=2``, ``mpp=0.25``); ``workers`` > 1 splits the slide's shards over worker processes.
    """
    results = tile_slides([slide], out_dir, tile, tissue, store, options, progress=progress, **option_fields)
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
    options: TileOptions | None = None,
    *,
    progress: bool = True,
    volume: VolumeSpec | None = None,
    label: str | Path | None = None,
    timepoint: int | None = None,
    slide_ids: list[str] | None = None,
    **option_fields: Any,
) -> list[TileResult]:
    """Tile many slides; a slide that fails is reported in its result and the others go on.
    ``slide_ids`` names the stores (default: the file names without their extensions).

    ``options`` (:class:`~pathweak.config.TileOptions`, which documents each field) is how the run reads
    and works; a field given by name (``workers=2``, ``mpp="estimate"``) replaces that field of
    ``options``, and a name that is not a field is one clear error. ``mpp`` overrides every slide's
    level-0 resolution; ``"estimate"`` uses the resolution estimated from each slide's nuclei
    (:func:`pathweak.resolution.estimate_mpp`; the store records the source ``estimated`` and the range).
    With ``tile.mpp_check`` "warn" a slide whose resolution disagrees with its estimate gets a ``warning``
    on its result; with "strict" it fails and nothing is written.

    The slides of one call share one run: its process pool starts once, and a slide's planning and
    finishing overlap the cutting of another (see :mod:`pathweak.tiling.pool`).

    3D volumes among the inputs (NIfTI, NRRD, MetaImage, DICOM CT/MR files or series folders; see
    :func:`pathweak.volumes.volume_format`) are tiled by :mod:`pathweak.volumes.tiler` with ``volume``
    (default :class:`VolumeSpec`), into the same ``tiles`` folder; ``label`` (a label map on the
    volume's grid) needs a single volume, ``timepoint`` picks one volume of 4D series.
    """
    options = with_fields(options or TileOptions(), option_fields)
    from ..io.detect import volume_format

    paths = [Path(s) for s in slides]
    ids = list(slide_ids) if slide_ids is not None else default_ids(paths)
    if len(ids) != len(paths) or len(set(ids)) != len(ids):
        raise ConfigError("slide_ids must give one unique id per slide")
    is_volume = [volume_format(p) is not None for p in paths]
    if label is not None and sum(is_volume) != 1:
        raise ConfigError(
            f"a label map goes with exactly one volume, not {sum(is_volume)}",
            path=label,
            fix="tile each volume with its own --label",
        )
    slide_inputs = [(p, sid) for p, sid, vol in zip(paths, ids, is_volume, strict=False) if not vol]
    volumes = [(p, sid) for p, sid, vol in zip(paths, ids, is_volume, strict=False) if vol]
    with tiles_folder(out_dir):
        done: dict[tuple[str, str], TileResult] = {}
        if slide_inputs:
            specs = (tile or TileSpec(), tissue or TissueSpec(), store or StoreSpec())
            done.update(tile_slide_files(slide_inputs, out_dir, *specs, options, progress=progress))
        if volumes:
            done.update(
                _tile_volumes(
                    volumes,
                    Path(out_dir),
                    volume,
                    store or StoreSpec(),
                    None if label is None else Path(label),
                    timepoint,
                    options.force,
                    options.workers,
                    progress,
                )
            )
        results = [done[(str(p), sid)] for p, sid in zip(paths, ids, strict=False)]
    for r in results:  # an empty store is written (its mask and thumbnail show why), with a warning
        if not r.failed and r.n_tiles == 0 and r.store:
            r.warning = "; ".join(filter(None, [r.warning, empty_store_warning(r.store)]))
    return results


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
    done: dict[tuple[str, str], TileResult] = {}
    if workers == 1 or len(volumes) == 1:
        for p, sid in volumes:
            done[(str(p), sid)] = tile_volume_job(p, sid, out_dir, spec, store, label, timepoint, force, progress)
            log_line(done[(str(p), sid)].line("tile"))
        return done
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from .._atomic import exit_with_owner, owner_args
    from .pool import pool_context

    with (
        ProcessPoolExecutor(
            max_workers=min(workers, len(volumes)),
            mp_context=pool_context(),
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
                log_line(done[(str(p), sid)].line("tile"))
                advance(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return done
