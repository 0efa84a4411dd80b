"""The Typer app shared by the command modules, and the error handling every command uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

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


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a PathweakError as one line on stderr and exit non-zero, without a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PathweakError as exc:
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted; finished outputs are kept, partial ones were removed")
            raise typer.Exit(130) from None

    return wrapper
