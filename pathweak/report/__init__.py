"""Run reports: ``write_report(RUN)`` writes ``RUN/report.html`` (self-contained, offline) and its PNGs
for a training run or a cohort run: metrics table, ROC/PR with bootstrap bands, calibration and confusion
matrix (classification), Kaplan-Meier curves of predicted risk groups with the log-rank p (survival),
predicted vs true (regression, proportion), training curves per fold, and per-slide heatmaps next to
galleries of the highest- and lowest-scoring tiles. Needs matplotlib (imported when a report is written).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .build import find_run, write_report

_EXPORTS = {
    "find_run": "build",
    "write_report": "build",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
