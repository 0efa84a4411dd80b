"""Run reports: ``write_report(RUN)`` writes ``RUN/report.html`` (self-contained, offline) and its PNGs
for a training run or a cohort run: metrics table, ROC/PR with bootstrap bands, calibration and confusion
matrix (classification), Kaplan-Meier curves of predicted risk groups with the log-rank p (survival),
predicted vs true (regression, proportion), training curves per fold, and per-slide heatmaps next to
galleries of the highest- and lowest-scoring tiles. Needs matplotlib (imported when a report is written).
"""

from typing import Any

__all__ = ["find_run", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'pathweak.report' has no attribute {name!r}")
