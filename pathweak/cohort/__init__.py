"""Cohort batch jobs: a YAML spec and manifest, per-slide state and locks, local or Dask executors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .manifest import Slide, read_manifest
    from .outcome import CohortReport
    from .runner import run_cohort
    from .spec import CohortSpec

_EXPORTS = {
    "CohortReport": "outcome",
    "CohortSpec": "spec",
    "Slide": "manifest",
    "read_manifest": "manifest",
    "run_cohort": "runner",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
