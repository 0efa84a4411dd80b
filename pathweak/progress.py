"""Progress for long work: rich bars on a terminal, plain flushed lines in a log.

Bars are drawn only when asked for and stderr is a terminal (:func:`show_progress`). When the output
goes to a file or a pipe instead (a cluster job's log, ``cmd > log``), the command line turns on
progress *lines* (:func:`log_lines_to`): one line per stage and per slide as it happens, with the time
of day, each flushed at once so ``tail -f`` shows the run going; a bar then prints a line when it
starts, at most every :data:`LINE_EVERY` seconds while it runs, and when it ends. Library calls print
no lines unless a program turns them on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

LINE_EVERY = 15.0  # seconds between a running bar's lines in a log
_LINES: dict[str, TextIO | None] = {"stream": None}


def show_progress(enabled: bool = True) -> bool:
    """Whether to draw progress: asked for, and stderr is a terminal (a log file never gets bars).

    The one rule for every progress display pathweak runs: its own rich bars and Lightning's
    ``enable_progress_bar``."""
    return bool(enabled) and sys.stderr.isatty()


def log_lines_to(stream: TextIO | None) -> None:
    """Send progress lines to ``stream`` (None: no lines). The CLI calls it once per command."""
    _LINES["stream"] = stream


def lines_on() -> bool:
    """Whether progress lines are being written (see :func:`log_lines_to`)."""
    return _LINES["stream"] is not None


def log_line(text: str) -> None:
    """Write one progress line (``HH:MM:SS text``), flushed, when lines are on; else nothing."""
    stream = _LINES["stream"]
    if stream is None:
        return
    stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    stream.flush()


class Advance(Protocol):
    def __call__(self, n: int = 1, description: str | None = None, total: int | None = None) -> None: ...


@contextmanager
def progress_bar(
    total: int, description: str, enabled: bool = True, unit: str = "tiles", lines: bool = True
) -> Iterator[Advance]:
    """Yield ``advance(n, description=None, total=None)`` (``total`` adds to the bar's total, for work
    discovered as it goes); draws a rich bar on a terminal when ``enabled``, writes progress lines when
    they are on (:func:`log_lines_to`) and ``lines`` (False: the caller writes its own), else does nothing."""
    if not show_progress(enabled):
        if enabled and lines and lines_on():
            logger = _Lines(total, description, unit)
            yield logger
            logger.finish()
            return
        yield lambda n=1, description=None, total=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1, description: str | None = None, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=(bar.tasks[0].total or 0) + total)
            bar.update(task, advance=n, description=description or bar.tasks[0].description)

        yield advance


class _Lines:
    """A bar as log lines: at its start, at most every LINE_EVERY seconds, and at its end."""

    def __init__(self, total: int, description: str, unit: str):
        self.done, self.total, self.description, self.unit, self.item = 0, total, description, unit, ""
        self.started = self.last = time.monotonic()
        log_line(f"{description}: started" + (f", {total} {unit}" if total else ""))

    def count(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"

    def __call__(self, n: int = 1, description: str | None = None, total: int | None = None) -> None:
        self.done += n
        self.total += total or 0
        self.item = description or self.item
        now = time.monotonic()
        if now - self.last >= LINE_EVERY:
            self.last = now
            item = f" ({self.item})" if self.item else ""
            log_line(f"{self.description}: {self.count()}{item}, {now - self.started:.0f} s")

    def finish(self) -> None:
        log_line(f"{self.description}: finished, {self.count()} in {time.monotonic() - self.started:.1f} s")
