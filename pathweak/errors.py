"""User-facing errors: each names the file, the problem and the fix in one line."""

from __future__ import annotations

from os import PathLike


class PathweakError(Exception):
    """Base of every error pathweak raises on bad input.

    ``str(err)`` is one line: ``<path>: <problem>. <fix>``. The CLI prints exactly that line and
    exits with a non-zero status.
    """

    exit_code = 2

    def __init__(
        self,
        problem: str = "",
        *,
        path: str | PathLike[str] | None = None,
        fix: str | None = None,
        message: str | None = None,
    ):
        if message is not None and not problem:  # re-raised by torch's DataLoader from a worker's traceback
            problem = _error_line(message)
        self.path = None if path is None else str(path)
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(self.problem + ".")
        if self.fix:
            parts.append(" " + self.fix[0].upper() + self.fix[1:].rstrip(".") + ".")
        return "".join(parts)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (_rebuild, (type(self), self.problem, self.path, self.fix))


def _error_line(text: str) -> str:
    """The error's own line out of a traceback text (``pkg.ErrorType: <message>``, the last line)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    head, sep, rest = last.partition(": ")
    return rest if sep and "Error" in head and " " not in head else last


def _rebuild(cls: type[PathweakError], problem: str, path: str | None, fix: str | None) -> PathweakError:
    return cls(problem, path=path, fix=fix)


def reason(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name when empty), for the "(...)" of an error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]


class SlideNotFoundError(PathweakError):
    """The slide path does not exist."""


class SlideFormatError(PathweakError):
    """The file is not a slide any reader understands."""


class CorruptSlideError(PathweakError):
    """The slide opened but its data is damaged (truncated file, corrupt tiles)."""


class MissingMppError(PathweakError):
    """The slide carries no usable resolution and none was given."""


class UnsupportedSlideError(PathweakError):
    """The slide is readable but not something pathweak can tile (e.g. multiplex fluorescence)."""


class ConfigError(PathweakError):
    """A spec, option or config file is invalid."""


class StoreError(PathweakError):
    """An on-disk store is missing, incomplete or of another format version."""


class GeometryMismatchError(PathweakError):
    """Two images that must share a voxel grid (a volume and its label volume) do not."""


class LabelsError(PathweakError):
    """A labels file (slide_id, patient_id, label) is malformed or does not match the features."""


class MemoryBudgetError(PathweakError):
    """The data does not fit in the memory available on the chosen device."""
