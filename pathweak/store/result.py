"""One result type and one failure message for every per-input stage (tiling, volume tiling, extraction,
cohort tasks)."""

from __future__ import annotations

from typing import Any

from ..errors import PathweakError


class StageResult:
    """What happened to one input of a stage: ``status`` (the stage's word for done, "skipped" or
    "failed"), ``error`` (one line, :func:`failure_text`) and the ``exception`` behind it. The stages'
    result dataclasses (TileResult, ExtractResult) derive from it."""

    status: str
    error: str | None
    exception: BaseException | None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def exit_code(self) -> int:
        """2 when the input was bad (a :class:`PathweakError`), 1 for another failure, 0 when it did not fail."""
        if not self.failed:
            return 0
        return int(getattr(self.exception, "exit_code", 1))

    def line(self, stage: str) -> str:
        """This result as one line of a log (:func:`result_line`)."""
        row = self.as_row()
        return result_line(stage, row.get("slide_id") or "?", row)

    def as_row(self) -> dict[str, Any]:
        """The result as plain data (for ``--json`` and summaries): every field but the exception."""
        return {k: v for k, v in vars(self).items() if k != "exception"}


def failure_text(subject: object, exc: BaseException) -> str:
    """The one-line error of a failed stage: a :class:`PathweakError`'s own line (it names its file and
    the fix), else ``<subject>: <ExceptionType>: <message>``."""
    if isinstance(exc, PathweakError):
        return str(exc)
    return f"{subject}: {type(exc).__name__}: {exc}"


def result_line(stage: str, item: str, result: dict[str, Any]) -> str:
    """One input's outcome in a stage, for a log: ``<stage> <item>: <status>, <n> tiles, <s> s`` or
    ``...: failed: <error>``."""
    parts = [f"{stage} {item}: {result.get('status')}"]
    if result.get("n_tiles") is not None and result.get("status") != "failed":
        parts.append(f"{result['n_tiles']} tiles")
    if result.get("seconds") is not None:
        parts.append(f"{result['seconds']:.1f} s")
    text = ", ".join(parts)
    if result.get("status") == "failed":
        text += f": {(result.get('error') or 'failed').splitlines()[0]}"
    return text
