"""Lock files so that two runs never write the same output at once.

A lock is ``<output>.lock`` created atomically (O_CREAT | O_EXCL) holding the owner's host, pid and
process start time. A lock is stale, and taken over, when it is unreadable or its owner is a process of
this host that is gone (a zombie or a reused pid counts as gone, see :func:`pathweak._atomic.writer_alive`).
A lock of another host is never taken over: its owner cannot be asked (remove it by hand if that run is
dead). Waiting for a live lock polls until it is released or a timeout passes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._atomic import Writer, partial_path, process_start, writer_alive
from ..errors import PathweakError


class LockedError(PathweakError):
    """The output is being written by another run."""


def lock_owner(lock: Path) -> dict[str, Any] | None:
    """The owner recorded in a lock file, None when it cannot be read."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def lock_stale(owner: dict[str, Any] | None) -> bool:
    """True when a lock with this owner can be taken over (see the module docstring)."""
    if owner is None:
        return True
    if owner.get("host") != socket.gethostname():
        return False
    try:
        writer = Writer(str(owner["host"]), int(owner.get("pid", -1)), int(owner.get("start", 0) or 0))
    except (TypeError, ValueError, KeyError):
        return True
    return not writer_alive(writer)


@contextmanager
def output_lock(output: Path, timeout: float = 3600.0, poll: float = 0.2) -> Iterator[None]:
    """Hold ``<output>.lock`` while the block runs; wait up to ``timeout`` seconds for another run's lock.

    The lock file appears with its owner already in it (written under a temporary name, then hard-linked
    into place, which fails when a lock exists), and a stale lock is removed only by one run at a time
    and only if it still names the owner found stale: two runs can never both hold it.
    """
    lock = output.with_name(output.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()), "since": time.time()}
    deadline = time.monotonic() + timeout
    while not _create(lock, mine):
        owner = lock_owner(lock)
        if lock_stale(owner) and not (owner is None and _young(lock)):
            _break(lock, owner)
            continue
        if time.monotonic() > deadline:
            raise LockedError(
                f"another run (pid {owner.get('pid') if owner else '?'}) is writing this output",
                path=output,
                fix="wait for it to finish, or remove the .lock file if that run is dead",
            )
        time.sleep(poll)
    try:
        yield
    finally:
        if lock_owner(lock) == mine:
            lock.unlink(missing_ok=True)


def _create(lock: Path, owner: dict[str, Any]) -> bool:
    """Create ``lock`` holding ``owner``; False when a lock is there."""
    tmp = partial_path(lock)
    try:
        tmp.write_text(json.dumps(owner))
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(owner))
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _break(lock: Path, owner: dict[str, Any] | None) -> None:
    """Remove a stale lock, if it still names ``owner``, holding ``<lock>.break`` so that no other run
    removes a lock that was taken meanwhile."""
    breaker = lock.with_name(lock.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if not _young(breaker):  # left by a run that died while breaking
            breaker.unlink(missing_ok=True)
        time.sleep(0.01)
        return
    os.close(fd)
    try:
        if _still_names(lock, owner):
            lock.unlink(missing_ok=True)
    finally:
        breaker.unlink(missing_ok=True)


def _still_names(lock: Path, owner: dict[str, Any] | None) -> bool:
    """True when the file now at ``lock`` is the stale one: it names ``owner`` (or, for ``owner`` None, is
    unreadable), read through one open file that is still the one at the path.

    A missing lock is never broken: a run may create its lock between any look at the path and the
    unlink (testing "missing" and then "exists" would remove that run's live lock). Only the breaker
    holder removes a stale lock, and a stale lock's owner is dead (an unreadable one is left alone while
    it is young), so the file read here is still the one at the path when it is unlinked.
    """
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "r") as fh:
            try:
                found = json.loads(fh.read())
            except ValueError:
                found = None
            inode = os.fstat(fh.fileno()).st_ino
        found = found if isinstance(found, dict) else None
        return found == owner and os.stat(lock).st_ino == inode
    except OSError:
        return False


def _young(path: Path, seconds: float = 5.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False
