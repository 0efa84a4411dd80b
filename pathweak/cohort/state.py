"""Per-slide bookkeeping: ``<out>/state/<slide_id>.json`` records each stage's status, output, timing and
error; written atomically so a killed run never leaves a half-written state file."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_file


@dataclass
class StageRecord:
    status: str  # "done" | "skipped" | "failed"
    output: str | None = None
    seconds: float = 0.0
    error: str | None = None
    finished: str = ""
    attempts: int = 1


@dataclass
class SlideState:
    slide_id: str
    stages: dict[str, StageRecord] = field(default_factory=dict)

    def failed_stage(self) -> str | None:
        return next((name for name, rec in self.stages.items() if rec.status == "failed"), None)


class StateStore:
    """Reads and writes the state files of one cohort output folder."""

    def __init__(self, out: Path):
        self.folder = out / "state"

    def path(self, slide_id: str) -> Path:
        return self.folder / f"{slide_id}.json"

    def load(self, slide_id: str) -> SlideState:
        try:
            data = json.loads(self.path(slide_id).read_text())
        except (OSError, ValueError):
            return SlideState(slide_id)
        return SlideState(slide_id, {k: StageRecord(**v) for k, v in data.get("stages", {}).items()})

    def record(self, slide_id: str, stage: str, result: dict[str, Any]) -> SlideState:
        """Store one stage's outcome (``status``, ``output``, ``seconds``, ``error``); under the slide's
        state lock, so that two runs recording at once do not lose each other's stages."""
        from ..store.locks import output_lock

        with output_lock(self.path(slide_id)):
            return self._record(slide_id, stage, result)

    def _record(self, slide_id: str, stage: str, result: dict[str, Any]) -> SlideState:
        state = self.load(slide_id)
        previous = state.stages.get(stage)
        attempts = (previous.attempts + 1) if previous and previous.status == "failed" else 1
        state.stages[stage] = StageRecord(
            status=result["status"],
            output=result.get("output"),
            seconds=round(float(result.get("seconds", 0.0)), 2),
            error=result.get("error"),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            attempts=attempts,
        )
        self._write(state)
        return state

    def _write(self, state: SlideState) -> None:
        with atomic_file(self.path(state.slide_id)) as fh:
            fh.write(
                json.dumps(
                    {"slide_id": state.slide_id, "stages": {k: asdict(v) for k, v in state.stages.items()}}, indent=2
                )
            )
