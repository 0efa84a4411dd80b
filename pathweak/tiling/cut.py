"""Reading and cutting (step 2 of tiling) and finishing (step 3).

**tile** (one or more tasks per slide, each a range of shards): read source regions a patch row at a
time, cut every patch they hold, resize when needed, encode shards in a background thread while the
next region is decoded, and write each shard file atomically. **finish**: flag the store complete and
rename it into place, replacing a stale one. A failure removes the temporary store (:func:`discard`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..io import TiffTileReader
from ..protocols import LevelReader
from ..store import build as lifecycle
from ..store import codecs
from ..store.shards import shard_key, write_shard
from .plan import TilePlan
from .readers import open_cached


def tile_shards(plan: TilePlan, first: int, stop: int, on_shard: Callable[[int], Any] | None = None) -> int:
    """Step 2: fill shards ``first..stop-1`` of the planned store; returns the number of tiles written.
    The slide is read through the reader that planning opened when it ran in this process."""
    import zarr

    job = plan.job
    assert plan.tmp is not None
    tmp = Path(plan.tmp)
    lo, hi = first * plan.shard_tiles, min(plan.n_tiles, stop * plan.shard_tiles)
    grid_index = np.asarray(zarr.open_array(str(tmp / "grid_index"), mode="r")[lo:hi])
    level_xy = grid_index[:, ::-1].astype(np.int64) * plan.stride_level_px
    encode = codecs.encoder_for(job.store)
    reader = open_cached(job).reader
    written = 0
    # encoding runs in ``encode_threads`` threads while this thread decodes the next shard's source
    # tiles (both release the GIL); 0 encodes inline. At most threads + 1 shards wait, so memory is bounded.
    threads = job.encode_threads
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending: deque[Future[None]] = deque()
        for shard in range(first, stop):
            s0, s1 = shard * plan.shard_tiles - lo, min(hi, (shard + 1) * plan.shard_tiles) - lo
            tiles = cut_tiles(reader, plan, level_xy[s0:s1])
            path = shard_key(tmp / "tiles", shard, 4)
            if threads == 0:
                _encode_and_write(path, tiles, encode, plan.shard_tiles)
            else:
                pending.append(pool.submit(_encode_and_write, path, tiles, encode, plan.shard_tiles))
                while len(pending) > threads:
                    pending.popleft().result()
            written += len(tiles)
            if on_shard is not None:
                on_shard(len(tiles))
        while pending:
            pending.popleft().result()
    if isinstance(reader, TiffTileReader):
        reader.drop_cache()  # the slide may stay open for a later range: keep its file, not its pixels
    return written


def cut_tiles(reader: LevelReader, plan: TilePlan, level_xy: np.ndarray) -> np.ndarray:
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


def _encode_and_write(path: Path, tiles: np.ndarray, encode: Callable[[np.ndarray], bytes], slots: int) -> None:
    write_shard(path, [encode(t) for t in tiles], slots)


def finish_tiling(plan: TilePlan) -> Path:
    """Step 3: flag the store complete and move it into place (replacing a stale store)."""
    assert plan.tmp is not None
    return lifecycle.commit(Path(plan.tmp), plan.job.final_path, store=True)


def discard(plan: TilePlan | None) -> None:
    """Remove a plan's temporary store."""
    if plan is not None and plan.tmp:
        lifecycle.discard(Path(plan.tmp))
