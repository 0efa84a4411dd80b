"""One failure message for every stage: what a failed slide, store or task reports."""

from __future__ import annotations

from ..errors import PathweakError


def failure_text(subject: object, exc: BaseException) -> str:
    """The one-line error of a failed stage: a :class:`PathweakError`'s own line (it names its file and
    the fix), else ``<subject>: <ExceptionType>: <message>``."""
    if isinstance(exc, PathweakError):
        return str(exc)
    return f"{subject}: {type(exc).__name__}: {exc}"
