"""The slide tiler: slide → tissue mask → tile grid → TileStore, in parallel, atomically, resumably.

Its rooms, in the order a slide passes through them:

- :mod:`.inputs`: finding the inputs (files, folders, patterns) and their store ids;
- :mod:`.plan` (step 1, one task per slide): open, fingerprint, skip when current, tissue, grid, store
  skeleton under a temporary name;
- :mod:`.readers`: the slide and its fast direct TIFF tile reader, opened once per slide and process;
- :mod:`.cut` (step 2, one or more tasks per slide): read, cut, encode and write shards; step 3,
  finish: flag complete and rename into place;
- :mod:`.pool`: running the steps in this process or over a process pool, overlapping one slide's
  fixed costs with another's cutting.

A failure at any step removes the temporary store; nothing half-written is ever left under the final
name, and a crashed run's leftovers are swept on the next run. Which inputs are slides and which are
volumes is decided above this module, by :mod:`pathweak.tiling.run`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import StoreSpec, TileOptions, TileSpec, TissueSpec
from ..store.tile_result import TileResult
from .plan import TileJob, resolve_mpps
from .pool import run_inline, run_pool


def tile_slide_files(
    slides: list[tuple[Path, str]],
    out_dir: str | Path,
    tile: TileSpec,
    tissue: TissueSpec,
    store: StoreSpec,
    options: TileOptions,
    *,
    progress: bool = True,
) -> dict[tuple[str, str], TileResult]:
    """Tile ``slides`` (path, store id) into ``<out_dir>/tiles``; each result is keyed by (path, id)
    and records its own failure. ``options`` (:class:`~pathweak.config.TileOptions`) goes to every
    slide's job unchanged."""
    from ..tissue.models import resolve_models

    tissue = resolve_models(tissue)  # a tissue or artefact model's weights: found once, before any slide
    jobs = [
        TileJob(
            slide=str(p), out_dir=str(out_dir), tile=tile, tissue=tissue, store=store, options=options, slide_id=sid
        )
        for p, sid in slides
    ]
    jobs, refused, warnings = resolve_mpps(jobs)
    done = dict(refused)
    if jobs:
        workers = options.workers
        results = run_inline(jobs, progress) if workers == 1 else run_pool(jobs, workers, progress)
        done.update({(r.slide, r.slide_id): r for r in results})
    for key, warning in warnings.items():
        done[key].warning = warning
    return done
