"""Whether two runs wrote the same outputs (the before/after benchmarks of a change that should alter no
result): each TileStore's cache key and one hash over its arrays' chunk files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def store_digests(tiles: str | Path) -> dict[str, dict]:
    """Per store in the folder ``tiles``: its cache key and one hash over every array's chunk files (tiles,
    coordinates, grid, tissue mask, thumbnail); the attributes that name a path or a time are left out."""
    digests = {}
    for store in sorted(Path(tiles).glob("*.zarr")):
        attrs = json.loads((store / "zarr.json").read_text())["attributes"]
        sha = hashlib.sha256()
        for chunk in sorted(p for p in store.rglob("*") if p.is_file() and "c" in p.relative_to(store).parts):
            sha.update(str(chunk.relative_to(store)).encode())
            sha.update(chunk.read_bytes())
        digests[store.name] = {"cache_key": attrs.get("cache_key"), "chunks_sha256": sha.hexdigest()}
    return digests


def same_stores(after: str | Path, before: str | Path) -> dict:
    """Whether the stores of two ``tiles`` folders are the same: names, cache keys (a rerun of either code
    skips the other's stores) and chunk bytes."""
    a, b = store_digests(after), store_digests(before)
    keys = sorted(set(a) | set(b))
    return {
        "stores": len(keys),
        "same_store_names": set(a) == set(b),
        "same_cache_keys": all(a.get(k, {}).get("cache_key") == b.get(k, {}).get("cache_key") for k in keys),
        "same_chunk_bytes": all(a.get(k, {}).get("chunks_sha256") == b.get(k, {}).get("chunks_sha256") for k in keys),
    }
