"""One encoder per worker process: extraction tasks of many slides reuse the loaded model (on a GPU: one
process per GPU, cohort/runner.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Encoder

_CACHE: dict[tuple[Any, ...], Encoder] = {}


def cached_encoder(name: str, weights: str | None) -> Encoder:
    """The encoder ``name`` (with ``weights``), created once per process and again when its weights
    file changes (a re-run of pretraining)."""
    from pathlib import Path

    from . import create_encoder

    files = [Path(weights)] if weights else []
    if name.startswith("pathweak:"):
        files.append(Path(name[9:]) / "encoder.safetensors")
    key = (name, weights, tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = create_encoder(name, weights)
    return _CACHE[key]


def release_encoders() -> None:
    """Drop this process's encoder and give its GPU memory back (a Dask worker after the extract stage)."""
    from ..devices import empty_cache, worker_device

    _CACHE.clear()
    empty_cache(worker_device("cpu"))
