"""Atomic outputs: build a directory under a temporary sibling name, then swap it into place; write a
file under a temporary name and rename it (``atomic_file``). A reader never sees a partial output.

Temporary names are ``.<name>.partial-<pid>-<random>``; a run sweeps those whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ._provenance import pid_alive

PARTIAL = ".partial-"


def partial_path(final: Path) -> Path:
    """A fresh temporary sibling of ``final`` owned by this process."""
    return final.with_name(f".{final.name}{PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def ensure_replaceable(final: Path, marker: str, what: str) -> None:
    """Refuse to go on when ``final`` is an existing, non-empty folder without ``marker`` (the file every
    earlier output of this kind has): replacing it would delete something that is not ours."""
    from .errors import ConfigError

    if final.is_dir() and not (final / marker).exists() and any(final.iterdir()):
        raise ConfigError(
            f"the folder exists and does not hold {what} (it has no {marker}); writing here would replace what it holds",
            path=final, fix="choose a new or empty folder",
        )


def swap_into_place(tmp: Path, final: Path, marker: str | None = None, what: str = "output") -> Path:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and deleted after. With
    ``marker``, an existing ``final`` that lacks it is refused (:func:`ensure_replaceable`)."""
    if marker is not None:
        ensure_replaceable(final, marker, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        stale = final.with_name(f".{final.name}{PARTIAL}{os.getpid()}-stale-{uuid.uuid4().hex[:8]}")
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for ``path`` (``mode`` "w" or "wb"); it replaces ``path`` when the block
    ends without an error and is deleted when it raises."""
    path = Path(path)
    tmp = partial_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sweep_partials(folder: Path) -> None:
    """Remove temporary outputs in ``folder`` left by runs whose process is gone (a crash or a kill)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if PARTIAL not in p.name:
            continue
        try:
            pid = int(p.name.split(PARTIAL, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def missing_dirs(path: Path) -> list[Path]:
    """The folders of ``path`` that do not exist yet, deepest first (to remove them if nothing is written)."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def remove_if_empty(dirs: list[Path]) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass
