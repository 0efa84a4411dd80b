"""Provenance helpers: file fingerprints (content hashes), cache keys and library versions."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

# Files up to this size are hashed whole; larger ones by a fixed sample of 1 MiB blocks.
FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BLOCKS = 64
_BLOCK = 2**20


def content_hash(path: str | Path) -> str:
    """BLAKE2b of a file's bytes; files over 64 MiB hash their size and 64 evenly spaced 1 MiB blocks
    (first and last included), which changes whenever the file is re-exported, truncated or replaced."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(8 * _BLOCK), b""):
                h.update(block)
            return "blake2b:" + h.hexdigest()
        step = (size - _BLOCK) / (_SAMPLE_BLOCKS - 1)
        for i in range(_SAMPLE_BLOCKS):
            fh.seek(int(i * step))
            h.update(fh.read(_BLOCK))
    return "blake2b-sampled:" + h.hexdigest()


def same_stat(path: str | Path, previous: dict[str, Any] | None) -> bool:
    """True when ``previous`` (an earlier fingerprint) has this file's current size and mtime."""
    if not previous or "content_hash" not in previous:
        return False
    st = Path(path).stat()
    return previous.get("size") == st.st_size and previous.get("mtime_ns") == st.st_mtime_ns


def file_fingerprint(path: str | Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Path, size, mtime and content hash of a file. When ``previous`` (an earlier fingerprint) has the
    same size and mtime, its hash is reused instead of reading the file again."""
    path = Path(path)
    st = path.stat()
    fp: dict[str, Any] = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    fp["content_hash"] = previous["content_hash"] if same_stat(path, previous) else content_hash(path)  # type: ignore[index]
    return fp


def json_value(value: Any) -> Any:
    """``json.dumps``'s ``default`` for the values pathweak records: numpy scalars and arrays, tuples and
    paths become plain JSON; anything else is a TypeError, so a key or a record never quietly holds a repr."""
    import numpy as np

    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, set, frozenset)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def cache_key(**parts: Any) -> str:
    """A stable hash of everything a stage's output depends on; the parts must be JSON values (or what
    :func:`json_value` turns into one), else TypeError."""
    blob = json.dumps(parts, sort_keys=True, default=json_value).encode()
    return hashlib.sha256(blob).hexdigest()


def versions(*packages: str) -> dict[str, str | None]:
    """Installed versions of pathweak and the given packages."""
    out: dict[str, str | None] = {}
    for name in ("pathweak", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
