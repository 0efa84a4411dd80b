"""Opening a slide for tiling: the slide and its level reader (the fast direct TIFF tile reader where
it applies, else the slide backend), opened once per slide and process and shared by planning and
cutting."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import TiffTileReader, open_slide
from ..io.base import Slide
from ..protocols import LevelReader

if TYPE_CHECKING:
    from .plan import TileJob

KEEP_OPEN = 2  # slides kept open per process: the one being cut and the one being planned next


class SlideLevelReader:
    """Level-pixel reads through the slide backend (used where direct tile decoding does not apply)."""

    def __init__(self, slide: Slide):
        self.slide = slide

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.slide.level_downsamples[level]
        return self.slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))


class OpenedSlide:
    """A slide opened for tiling; its level reader is opened on first use (a slide whose store is up
    to date is skipped without one)."""

    def __init__(self, slide: Slide, fast_read: bool):
        self.slide = slide
        self._fast_read = fast_read
        self._reader: LevelReader | None = None

    @property
    def reader(self) -> LevelReader:
        """The direct TIFF tile reader where it applies (and ``fast_read`` is on), else the backend's."""
        if self._reader is None:
            fast = TiffTileReader.for_slide(self.slide) if self._fast_read else None
            self._reader = fast or SlideLevelReader(self.slide)
        return self._reader

    @property
    def reader_name(self) -> str:
        """The store's ``slide.reader`` attribute: "tiff-tiles" for the direct reader, else the backend."""
        return "tiff-tiles" if isinstance(self.reader, TiffTileReader) else self.slide.backend

    def close(self) -> None:
        if isinstance(self._reader, TiffTileReader):
            self._reader.close()
        self._reader = None
        self.slide.close()


_OPEN: OrderedDict[tuple[Any, ...], OpenedSlide] = OrderedDict()
_LOCK = threading.Lock()


def _key(job: TileJob) -> tuple[Any, ...]:
    # the store id too: one file tiled under two ids is two slides (planned and cut in different threads)
    return (job.slide, job.slide_id, job.options.backend, job.options.mpp, job.options.fast_read)


def open_cached(job: TileJob) -> OpenedSlide:
    """The slide of ``job``, opened on first use and kept open in this process (at most
    :data:`KEEP_OPEN` slides; the least recently used is closed) so that planning and every cutting
    task of the slide in this process share one open file and one reader."""
    key = _key(job)
    with _LOCK:
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key]
    entry = OpenedSlide(open_slide(job.slide, backend=job.options.backend, mpp=job.level0_mpp), job.options.fast_read)
    with _LOCK:
        _OPEN[key] = entry
        evicted = [_OPEN.popitem(last=False)[1] for _ in range(len(_OPEN) - KEEP_OPEN)]
    for old in evicted:
        old.close()
    return entry


def close_cached(job: TileJob | None = None) -> None:
    """Close the slide of ``job`` (every open slide when None) in this process."""
    with _LOCK:
        if job is None:
            entries = list(_OPEN.values())
            _OPEN.clear()
        else:
            entry = _OPEN.pop(_key(job), None)
            entries = [] if entry is None else [entry]
    for entry in entries:
        entry.close()
