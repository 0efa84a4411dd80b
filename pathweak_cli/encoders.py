"""CLI commands ``pathweak encoders list`` and ``pathweak encoders info``: the encoder presets and families."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ._app import app, handle_errors, json_stdout
from ._conventions import Command

encoders_app = typer.Typer(help="Encoders that turn tiles into features.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(encoders_app, name="encoders")


@encoders_app.command("list", cls=Command)
@handle_errors
def encoders_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the presets (and families) as JSON.")] = False,
) -> None:
    """List the encoder presets (embedding size, input, resolution, licence, whether their weights are in
    the local Hugging Face cache here), the models that are not supported and why, and the families.
    Nothing is downloaded."""
    from pathweak.encoders import FAMILIES, preset_rows
    from pathweak.hub import hub_cli

    rows = preset_rows()
    if as_json:
        typer.echo(json.dumps({"presets": rows, "families": FAMILIES}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "dim", "input", "µm/px @ px", "licence", "gated", "weights here", "hub repo")
    for r in rows:
        if r["supported"]:
            table.add_row(
                r["name"],
                str(r["dim"]),
                str(r["input"]),
                f"{r['mpp']:g} @ {r['patch_px']}",
                r["licence"],
                "yes" if r["gated"] else "no",
                r["found"] or "no",
                r["repo"] or "(not on the hub)",
            )
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    console.print(
        f"Get weights with `{hub_cli()} download <hub repo>` (gated: request access first); "
        "`pathweak encoders info NAME` shows the full record and the exact command."
    )
    unsupported = Table("not supported", "repo", "why")
    for r in rows:
        if not r["supported"]:
            unsupported.add_row(r["name"], r["repo"], r["why"])
    console.print(unsupported)
    families = Table("family", "weights")
    for row in FAMILIES:
        families.add_row(row["name"], row["weights"])
    console.print(families)


@encoders_app.command("info", cls=Command)
@handle_errors
@json_stdout
def encoders_info(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="A preset name (see `pathweak encoders list`) or a family name such as pathweak:DIR."
        ),
    ],
    weights: Annotated[
        str | None, typer.Option(help="Where to look first: a weights file or a hub snapshot folder.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the record's only form; accepted for uniformity).")
    ] = False,
) -> None:
    """The full record of a preset as JSON: architecture and constructor arguments, input, resolution,
    mean/std, embedding rule and size, precision, licence, hub repo and files, the download command, and
    where its weights were looked for and found. For a family name (pathweak:DIR, timm:..., monai:...): the
    encoder's record, with `inputs` naming the stores it embeds (rgb tiles, volume 3D patches, or both)."""
    if ":" in name:
        from pathweak.encoders.records import family_info

        typer.echo(json.dumps(family_info(name, weights), indent=2))
        return
    from pathweak.encoders import preset_info

    typer.echo(json.dumps(preset_info(name, weights), indent=2))
