"""CLI command ``pathweak stain fit`` (a stain reference from images or a sample of a cohort's tiles), and the
``--stain-normalize`` / ``--stain-reference`` options of ``extract``. Imports no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import app, handle_errors
from ._conventions import Command, paths

stain_app = typer.Typer(help="Stain normalisation references.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(stain_app, name="stain")

METHODS = ("macenko", "vahadane", "reinhard")  # pathweak.stain.METHODS (checked by tests/stain)

StainMethodOpt = Annotated[
    str | None,
    typer.Option(
        "--stain-normalize",
        help=f"Normalise each slide's stain toward --stain-reference before embedding: {', '.join(METHODS)} "
        "(the slide's stain estimated once from 64 of its tiles; applied per batch on the model's device).",
    ),
]
StainRefOpt = Annotated[
    Path | None,
    typer.Option(
        "--stain-reference", help="The target stain: a ref.json from `pathweak stain fit`, or a tile or image file."
    ),
]


def stain_option(method: str | None, reference: Path | None) -> Any:
    """The ``stain=`` argument of extract_features from the two options (both or neither)."""
    from pathweak.errors import ConfigError

    if method is None and reference is None:
        return None
    if method is None or reference is None:
        raise ConfigError(
            "--stain-normalize and --stain-reference go together",
            fix="pass e.g. --stain-normalize macenko --stain-reference ref.json",
        )
    from pathweak.features.stain import StainNormalization

    return StainNormalization.load(method, reference)


@stain_app.command("fit", cls=Command)
@handle_errors
def stain_fit(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUTS", help="TileStores (<slide>.zarr), tiles/ folders or globs, and/or image files."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The reference to write (JSON), e.g. ref.json.")],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", help=f"Fit only these methods (repeatable; default all: {', '.join(METHODS)})."),
    ] = None,
    tiles: Annotated[int, typer.Option(help="Tiles sampled at random over the TileStores.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the tile sample.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reference as JSON.")] = False,
) -> None:
    """Fit a stain reference (every method's target) on image files and/or a random sample of tiles of
    TileStores, for `pathweak extract --stain-normalize METHOD --stain-reference REF`."""
    from pathweak.features.stain import fit_reference_from, not_he_warning

    methods = tuple(method or METHODS)
    ref = fit_reference_from(paths(inputs), methods, tiles, seed)
    ref.save(out)
    for m in ("macenko", "vahadane"):
        warning = not_he_warning(ref.targets[m], str(out)) if m in ref.targets else None
        if warning:
            typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **ref.as_dict()}, indent=2))
        return
    typer.echo(f"stain reference ({', '.join(methods)}) from {ref.source.get('tiles')} tiles/images -> {out}")
