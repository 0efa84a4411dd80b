"""Progress bars for long work (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


def show_progress(enabled: bool = True) -> bool:
    """Whether to draw progress: asked for, and stderr is a terminal (a log file never gets bars).

    The one rule for every progress display pathweak runs: its own rich bars and Lightning's
    ``enable_progress_bar``."""
    return bool(enabled) and sys.stderr.isatty()


class Advance(Protocol):
    def __call__(self, n: int = 1, description: str | None = None, total: int | None = None) -> None: ...


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True, unit: str = "tiles") -> Iterator[Advance]:
    """Yield ``advance(n, description=None, total=None)`` (``total`` adds to the bar's total, for work
    discovered as it goes); draws a rich bar on a terminal when ``enabled``, else does nothing."""
    if not show_progress(enabled):
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
