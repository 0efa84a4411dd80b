"""The Typer app shared by the command modules, and the error handling every command uses."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer

from pathweak.errors import PathweakError

app = typer.Typer(
    name="pathweak",
    help="Weakly supervised computational pathology: slides → tiles → features → slide scores, "
    "pseudo-labels, masks and QuPath heatmaps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from pathweak import __version__

        typer.echo(f"pathweak {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print pathweak's version and exit."),
    ] = False,
) -> None:
    """Weakly supervised computational pathology: slides → tiles → features → slide scores, pseudo-labels,
    masks and QuPath heatmaps."""


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a PathweakError as one line on stderr and exit non-zero, without a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        progress_lines(kwargs.get("progress", True) is not False, bool(kwargs.get("as_json")) or _json_stdout(fn))
        try:
            return fn(*args, **kwargs)
        except PathweakError as exc:
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted; finished outputs are kept, partial ones were removed")
            raise typer.Exit(130) from None

    return wrapper


def json_stdout(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a command whose stdout is always JSON (put it below ``@handle_errors``): its progress lines
    go to stderr."""
    fn.json_stdout = True  # type: ignore[attr-defined]
    return fn


def _json_stdout(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "json_stdout", False))


def progress_lines(enabled: bool, as_json: bool = False) -> None:
    """Progress lines (pathweak.progress) for a command whose output goes to a file or a pipe, not a
    terminal (which gets the bars): on stdout, or on stderr when stdout carries the command's JSON (then
    only when stderr is a file or a pipe too). Off with --no-progress, and when the stream is no real file
    (e.g. captured in memory)."""
    from pathweak.progress import log_lines_to

    stream = sys.stderr if as_json else sys.stdout
    try:
        to_file = not stream.isatty() and stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        to_file = False
    log_lines_to(stream if enabled and to_file else None)
