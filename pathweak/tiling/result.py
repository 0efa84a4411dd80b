"""What a tiling run returns for each input (:class:`TileResult`, slides and volumes alike) and the
output folder it leaves behind (:func:`tiles_folder`). Both tilers import this leaf module; neither
imports the other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import missing_dirs, remove_if_empty, sweep_partials
from ..store.result import StageResult, failure_text


@dataclass
class TileResult(StageResult):
    """What happened to one slide or volume. ``timings`` holds the seconds of each step the tiler
    timed from inside (``plan``, ``cut``, ``finish``, ...; see docs/architecture.md)."""

    slide: str
    slide_id: str
    status: str  # "tiled" | "skipped" | "failed"
    store: str | None = None
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    warning: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    timings: dict[str, float] = field(default_factory=dict, compare=False)


def failed_result(slide: str, slide_id: str, exc: BaseException, started: float) -> TileResult:
    """A failed result; an unexpected error (not a PathweakError) is reported with its type too."""
    return TileResult(
        slide,
        slide_id,
        "failed",
        seconds=time.perf_counter() - started,
        error=failure_text(slide, exc),
        exception=exc,
    )


@contextmanager
def tiles_folder(out_dir: str | Path) -> Iterator[Path]:
    """``<out_dir>/tiles`` for one run: crash leftovers are swept before and after (writers of a killed
    run that were still exiting at the start are gone by the end), and folders this run created are
    removed again when nothing was written into them."""
    tiles_dir = Path(out_dir) / "tiles"
    sweep_partials(tiles_dir)
    created = missing_dirs(tiles_dir)
    try:
        yield tiles_dir
    finally:
        sweep_partials(tiles_dir)
        remove_if_empty(created)
