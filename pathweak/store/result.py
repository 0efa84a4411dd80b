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

    def as_row(self) -> dict[str, Any]:
        """The result as plain data (for ``--json`` and summaries): every field but the exception."""
        return {k: v for k, v in vars(self).items() if k != "exception"}


def failure_text(subject: object, exc: BaseException) -> str:
    """The one-line error of a failed stage: a :class:`PathweakError`'s own line (it names its file and
    the fix), else ``<subject>: <ExceptionType>: <message>``."""
    if isinstance(exc, PathweakError):
        return str(exc)
    return f"{subject}: {type(exc).__name__}: {exc}"
