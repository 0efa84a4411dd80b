"""One way to open a store of an expected kind, and to read its arrays, with one clear error per problem.

:func:`open_store` refuses, naming the store and the fix: no store there, damaged group metadata, another
kind, a newer format, an incomplete store, a missing array or chunk file, and arrays whose lengths
disagree. :func:`read_array` turns any failure to read an array later (a damaged, truncated or missing
chunk) into the same kind of error. Shards of tile arrays are checked by :mod:`pathweak.store.shards`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError, reason
from .header import StoreHeader, read_header

# what each kind is called, the command that makes it and its current format version
WHAT = {"tiles": "TileStore", "features": "FeatureStore", "results": "results store"}
MAKE = {
    "tiles": "delete it and re-run `pathweak tile` to re-tile the slide",
    "features": "delete it and re-run `pathweak extract`",
    "results": "delete it and re-run the step that wrote it (`pathweak predict`)",
}
REDO = {
    "tiles": "re-run `pathweak tile`; it redoes it",
    "features": "re-run `pathweak extract`; it redoes it",
    "results": "re-run the step that wrote it",
}
VERSIONS = {"tiles": 1, "features": 1, "results": 1}


@dataclass
class OpenedStore:
    """A store that passed the checks: its path, group attributes and header."""

    path: Path
    attrs: dict[str, Any]
    header: StoreHeader


def damaged(path: Path, kind: str, problem: str) -> StoreError:
    """The error for a damaged ``kind`` store at ``path``."""
    return StoreError(f"the {WHAT.get(kind, 'store')} is damaged: {problem}", path=path, fix=MAKE.get(kind))


def read_attrs(path: Path) -> dict[str, Any] | None:
    """The group attributes of a store, or None when there is no readable group at ``path``."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("attributes", {}) if isinstance(meta, dict) else None


def array_meta(path: Path, name: str, kind: str) -> dict[str, Any]:
    """The Zarr metadata of array ``name`` of the store at ``path`` (a damaged or missing one is an error)."""
    meta_path = path / name / "zarr.json"
    try:
        meta = json.loads(meta_path.read_text())
        shape = [int(s) for s in meta["shape"]]
        [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
    except FileNotFoundError:
        raise damaged(path, kind, f"array {name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise damaged(path, kind, f"the metadata of array {name} is unreadable ({reason(exc)})") from None
    meta["shape"] = shape
    return meta


def open_store(
    path: str | Path, kind: str, arrays: tuple[str, ...] = (), rows: dict[str, int] | None = None
) -> OpenedStore:
    """Open the store at ``path``, which must be a finished ``kind`` store of a format this version reads.

    ``arrays`` must exist with the same first dimension (and that of ``rows``: name -> expected length,
    e.g. the header's tile count); in stores with checksums every chunk file must be present.
    """
    path = Path(path)
    what = WHAT[kind]
    group = path / "zarr.json"
    if not group.exists():
        raise StoreError(f"no {what} here", path=path, fix=_missing_fix(path, kind))
    attrs = read_attrs(path)
    if attrs is None:
        raise damaged(path, kind, "its group metadata (zarr.json) is unreadable")
    found = attrs.get("kind")
    if found != kind:
        raise StoreError(
            f"not a {what} (kind={found!r})",
            path=path,
            fix=f"pass a {what}" + (f"; this is a {WHAT[found]}" if found in WHAT else ""),
        )
    version = attrs.get("pathweak_format")
    if not isinstance(version, int) or version > VERSIONS[kind]:
        raise StoreError(
            f"{what} format {version} is newer than this pathweak reads ({VERSIONS[kind]})",
            path=path,
            fix="upgrade pathweak, or re-create the store with this version",
        )
    if version < VERSIONS[kind]:
        raise StoreError(f"{what} format {version} is not {VERSIONS[kind]}", path=path, fix=MAKE[kind])
    if not attrs.get("complete"):
        raise StoreError(f"the {what} is incomplete", path=path, fix=REDO[kind])
    metas = {name: array_meta(path, name, kind) for name in arrays}
    lengths = {name: m["shape"][0] for name, m in metas.items() if m["shape"]}
    lengths.update({f"{name} (header)": n for name, n in (rows or {}).items()})
    if len(set(lengths.values())) > 1:
        told = ", ".join(f"{n} {name}" for name, n in lengths.items())
        raise damaged(path, kind, f"its arrays' lengths disagree ({told})")
    coords = metas.get("coords")
    header = read_header(attrs, coords["shape"][1] if coords and len(coords["shape"]) > 1 else None)
    if header.checked:
        for name, meta in metas.items():
            check_chunk_files(path, name, meta, kind)
    return OpenedStore(path, attrs, header)


def check_chunk_files(path: Path, name: str, meta: dict[str, Any], kind: str) -> None:
    """Every chunk (or shard) file of array ``name`` exists (stores with checksums write every chunk)."""
    shape = meta["shape"]
    chunks = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
    expected = math.prod(math.ceil(s / c) for s, c in zip(shape, chunks, strict=False)) if all(shape) else 0
    folder = path / name / "c"
    present = sum(1 for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    if present < expected:
        unit = "shard" if meta.get("codecs", [{}])[0].get("name") == "sharding_indexed" else "chunk"
        raise damaged(path, kind, f"{expected - present} of the {expected} {unit} files of array {name} are missing")


def read_array(path: Path, name: str, kind: str, index: Any = Ellipsis) -> np.ndarray:
    """Array ``name`` (or ``index`` of it) of the store at ``path``; a damaged, truncated or missing chunk
    is a :class:`StoreError` naming the store."""
    import zarr

    from . import codecs  # noqa: F401  (registers pathweak.jpeg with Zarr, entry point or not)

    try:
        return np.asarray(zarr.open_array(str(path / name), mode="r")[index])
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr, the codecs and numpy each raise their own
        raise damaged(path, kind, f"array {name} cannot be read ({reason(exc)})") from None


def _missing_fix(path: Path, kind: str) -> str:
    make = {
        "tiles": "run `pathweak tile` to create it",
        "features": "run `pathweak extract` to create it",
        "results": "check the path, or pass a CSV with x, y and score columns",
    }[kind]
    return make


def find_stores(inputs: list[str | Path], kind: str, what: str, fix: str, empty_fix: str) -> list[Path]:
    """Stores of ``kind`` named directly, found in folders (their ``*.zarr`` children) or by glob; a name
    that is none of these is an error (``fix`` says what to pass), and so is finding nothing."""
    import glob

    found: list[Path] = []
    for item in inputs:
        text = str(item)
        candidates = [Path(m) for m in sorted(glob.glob(text))] if any(c in text for c in "*?[") else [Path(text)]
        for p in candidates:
            if (p / "zarr.json").exists() and (read_attrs(p) or {}).get("kind") == kind:
                found.append(p)
            elif p.is_dir():
                found.extend(sorted(c for c in p.glob("*.zarr") if (read_attrs(c) or {}).get("kind") == kind))
            else:
                raise StoreError(f"no {what} here", path=p, fix=fix)
    if not found:
        raise StoreError(f"no {what}s found", path=", ".join(str(i) for i in inputs), fix=empty_fix)
    return found
