"""Atomic outputs: build a directory under a temporary sibling name, then swap it into place; write a
file under a temporary name and rename it (``atomic_file``). A reader never sees a partial output.

Temporary names are ``.<name>.partial-<host>~<pid>-<start>-<random>[<suffix>]``: the writer's host, its
pid and its process start time (clock ticks since boot, 0 where unknown), so that a sweep can tell a
crashed writer from a live one (see :func:`writer_alive` and docs/architecture.md "Crash leftovers").
Names of older versions (``.partial-<pid>-<random>``) are understood as this host's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._provenance import pid_alive

PARTIAL = ".partial-"
# a partial naming another host is removed only when nothing in it changed for this long: its writer
# cannot be asked whether it is alive, and a live writer touches its files far more often than this
FOREIGN_STALE_SECONDS = 24 * 3600.0
_NAME = re.compile(r"\.partial-(?:(?P<host>[^~/]+)~)?(?P<pid>\d+)-(?:(?P<start>\d+)-)?")


@dataclass(frozen=True)
class Writer:
    """Who wrote a temporary output: host, pid and process start time (0: unknown)."""

    host: str
    pid: int
    start: int = 0


def process_start(pid: int) -> int:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), 0 where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def process_state(pid: int) -> str | None:
    """The one-letter state of process ``pid`` from /proc (``Z`` for a zombie), None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def me() -> Writer:
    return Writer(socket.gethostname(), os.getpid(), process_start(os.getpid()))


def writer_alive(writer: Writer) -> bool:
    """True while ``writer`` (a process on this host) may still be writing: its pid exists, is not a
    zombie (a killed process waiting to be reaped still answers ``kill(pid, 0)``) and, where both are
    known, started when the name says (not a new process that reused the pid)."""
    if not pid_alive(writer.pid):
        return False
    if process_state(writer.pid) in ("Z", "X"):
        return False
    start = process_start(writer.pid)
    return not (writer.start and start and start != writer.start)


def owner_args() -> tuple[str, int, int]:
    """This process as the owner of pool workers: ``initargs`` for :func:`exit_with_owner`."""
    w = me()
    return w.host, w.pid, w.start


def exit_with_owner(host: str, pid: int, start: int, poll: float = 0.25) -> None:
    """Pool-worker initializer: end this worker as soon as the run that started it is gone (killed), so
    that it neither hangs on as an orphan holding its temporary outputs nor writes into them after the
    next run swept them. Workers are children of a forkserver, so the kernel does not end them."""
    import threading

    owner = Writer(host, pid, start)

    def watch() -> None:
        while writer_alive(owner):
            time.sleep(poll)
        os._exit(70)

    threading.Thread(target=watch, name="pathweak-owner-watch", daemon=True).start()


def parse_partial(name: str) -> Writer | None:
    """The writer named by a temporary name, None when ``name`` is not one."""
    m = _NAME.search(name)
    if m is None:
        return None
    return Writer(m["host"] or socket.gethostname(), int(m["pid"]), int(m["start"] or 0))


def partial_path(final: Path, keep_suffix: bool = False) -> Path:
    """A fresh temporary sibling of ``final`` owned by this process. ``keep_suffix`` keeps the file's
    suffixes at the end (for writers that choose the format by name, e.g. ``.nii.gz``)."""
    w = me()
    tag = f"{PARTIAL}{w.host}~{w.pid}-{w.start}-{uuid.uuid4().hex[:8]}"
    if keep_suffix and final.suffixes:
        suffix = "".join(final.suffixes)
        return final.with_name(f".{final.name[: -len(suffix)]}{tag}{suffix}")
    return final.with_name(f".{final.name}{tag}")


def ensure_replaceable(final: Path, marker: str, what: str) -> None:
    """Refuse to go on when ``final`` is an existing, non-empty folder without ``marker`` (the file every
    earlier output of this kind has): replacing it would delete something that is not ours."""
    from .errors import ConfigError

    if final.is_dir() and not (final / marker).exists() and any(final.iterdir()):
        raise ConfigError(
            f"the folder exists and does not hold {what} (it has no {marker}); writing here would replace what it holds",
            path=final,
            fix="choose a new or empty folder",
        )


def swap_into_place(tmp: Path, final: Path, marker: str | None = None, what: str = "output") -> Path:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and deleted after. With
    ``marker``, an existing ``final`` that lacks it is refused (:func:`ensure_replaceable`)."""
    if marker is not None:
        ensure_replaceable(final, marker, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        stale = partial_path(final.with_name(final.name + "-stale"))
        os.replace(final, stale)
        os.replace(tmp, final)
        remove_path(stale)
    else:
        os.replace(tmp, final)
    return final


def remove_path(p: Path) -> None:
    """Remove a file or a folder tree, quietly when it is already gone."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", keep_suffix: bool = False, **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for ``path`` (``mode`` "w" or "wb"); it replaces ``path`` when the block
    ends without an error and is deleted when it raises."""
    path = Path(path)
    tmp = partial_path(path, keep_suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = True) -> Iterator[Path]:
    """A temporary path for a file that a library writes by name (h5py, nibabel, safetensors); it is
    renamed to ``path`` when the block ends without an error and deleted when it raises."""
    path = Path(path)
    tmp = partial_path(path, keep_suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        remove_path(tmp) if tmp.exists() else None


def _newest_mtime(p: Path) -> float:
    try:
        newest = p.stat().st_mtime
    except OSError:
        return time.time()
    if p.is_dir():
        for q in p.rglob("*"):
            try:
                newest = max(newest, q.stat().st_mtime)
            except OSError:
                continue
    return newest


def removable(p: Path, foreign_stale_seconds: float = FOREIGN_STALE_SECONDS) -> bool:
    """True when the temporary output ``p`` can be removed: its writer (on this host) is gone, or it
    names another host and nothing in it changed for ``foreign_stale_seconds``."""
    writer = parse_partial(p.name)
    if writer is None:
        return False
    if writer.host != socket.gethostname():
        return time.time() - _newest_mtime(p) > foreign_stale_seconds
    return writer.pid != os.getpid() and not writer_alive(writer)


def sweep_partials(folder: Path, foreign_stale_seconds: float = FOREIGN_STALE_SECONDS, prefix: str = "") -> list[Path]:
    """Remove temporary outputs in ``folder`` left by runs whose writer is gone (a crash or a kill);
    returns what was removed. A partial of another host is kept while its writer may be alive.
    ``prefix`` limits the sweep to names that start with it (one output's partials in a user's folder)."""
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if PARTIAL in p.name and p.name.startswith(prefix) and removable(p, foreign_stale_seconds):
            remove_path(p)
            removed.append(p)
    return removed


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
