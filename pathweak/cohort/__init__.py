"""Cohort batch jobs: a YAML spec and manifest, per-slide state and locks, local or Dask executors."""

from .runner import CohortReport, run_cohort
from .spec import CohortSpec, Slide, read_manifest

__all__ = ["CohortReport", "CohortSpec", "Slide", "read_manifest", "run_cohort"]
