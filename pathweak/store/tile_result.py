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
from .result import StageResult, failure_text


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


def empty_store_warning(store: str | Path) -> str:
    """The warning for a finished store that holds no tiles, naming the likely cause from what the store
    records: no tissue found, an ROI or tissue too small for one patch at ``min_tissue``, or a slide
    smaller than one patch (docs/input_checks.md)."""
    from .open import read_attrs

    attrs = read_attrs(Path(store)) or {}
    tile, tissue = attrs.get("tile") or {}, attrs.get("tissue") or {}
    fraction = float(tissue.get("slide_tissue_fraction") or 0.0)
    min_tissue = float(tile.get("min_tissue") or 0.0)
    head = f"{store}: no tiles"
    if "volume" in attrs:
        return (
            f"{head}: the foreground ({tissue.get('method')}) covers {fraction:.1%} of the volume and no patch has "
            f"{min_tissue:.0%} foreground or more; check the volume, or lower --min-tissue"
        )
    patch, target = int(tile.get("patch_px") or 0), float((attrs.get("mpp") or {}).get("target") or 0.0)
    at = f"{patch} px patch at {target:g} um/px"
    level0 = (attrs.get("mpp") or {}).get("level0") or []
    dims = (attrs.get("slide") or {}).get("dimensions") or []
    if level0 and dims and target and min(d * m / target for d, m in zip(dims, level0, strict=False)) < patch:
        return f"{head}: the slide ({dims[0]} x {dims[1]} px at level 0) is smaller than one {at}; lower --patch"
    if tissue.get("method") == "roi":
        roi = (tissue.get("params") or {}).get("roi")
        return (
            f"{head}: the region of interest {roi} covers {fraction:.1%} of the slide and no {at} has "
            f"{min_tissue:.0%} of its area inside it; draw a larger region, or lower --min-tissue"
        )
    if fraction == 0:
        return (
            f"{head}: no tissue found on the slide (tissue method {tissue.get('method')}); check the slide (blank, "
            "fluorescence?) or choose another --tissue-method"
        )
    return (
        f"{head}: tissue covers {fraction:.1%} of the slide, but no {at} has {min_tissue:.0%} tissue or more; "
        "lower --min-tissue, --patch or --target-mpp"
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
