"""What a cohort run did (its outcome): one StageReport per stage, gathered in a CohortReport (the run
report of `pathweak report` is another thing: :mod:`pathweak.report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import CohortSpec


@dataclass
class StageReport:
    """What one stage did, over all slides (or once, for cohort-level stages)."""

    name: str
    seconds: float = 0.0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what ran but may not be what the user wanted

    def line(self) -> str:
        """The stage's one-line outcome for a log: counts and seconds, and the first failure."""
        text = (
            f"{self.name}: finished in {self.seconds:.1f} s: {len(self.done)} done, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed"
        )
        if self.failed:
            what, why = next(iter(self.failed.items()))
            text += f" ({what}: {why.splitlines()[0] if why else 'failed'})"
        return text


@dataclass
class CohortReport:
    spec: CohortSpec
    stages: list[StageReport]
    seconds: float
    summary_md: Path | None = None
    summary_json: Path | None = None

    @property
    def warnings(self) -> list[str]:
        """Every stage's warnings, in stage order, each once."""
        return list(dict.fromkeys(w for st in self.stages for w in st.warnings))

    @property
    def failed_slides(self) -> dict[str, str]:
        """Slide id -> the first stage that failed for it and why."""
        out: dict[str, str] = {}
        for st in self.stages:
            for sid, err in st.failed.items():
                out.setdefault(sid, f"{st.name}: {err}")
        return out
