"""Lock files so that two runs never write the same output at once.

A lock is ``<output>.lock`` created atomically (O_CREAT | O_EXCL) holding the owner's host and pid. A lock
whose owner process is gone (same host) is stale and taken over. Waiting for a live lock polls until it
is released or a timeout passes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._provenance import pid_alive
from ..errors import PathweakError


class LockedError(PathweakError):
    """The output is being written by another run."""


def _owner(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def _stale(owner: dict | None) -> bool:
    if owner is None:
        return True
    return owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1)))


@contextmanager
def output_lock(output: Path, timeout: float = 3600.0, poll: float = 0.2) -> Iterator[None]:
    """Hold ``<output>.lock`` while the block runs; wait up to ``timeout`` seconds for another run's lock."""
    lock = output.with_name(output.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if _stale(owner):
                try:
                    lock.unlink()
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() > deadline:
                raise LockedError(
                    f"another run (pid {owner.get('pid') if owner else '?'}) is writing this output",
                    path=output, fix="wait for it to finish, or remove the .lock file if that run is dead",
                ) from None
            time.sleep(poll)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield
    finally:
        try:
            if _owner(lock) == json.loads(me):
                lock.unlink()
        except FileNotFoundError:
            pass
