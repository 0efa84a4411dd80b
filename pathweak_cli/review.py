"""CLI commands of the review loop (docs/review.md): review export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pathweak.heatmap.review import export_review

from ._app import app, handle_errors
from ._conventions import Command, function_defaults

_EXPORT = function_defaults(export_review)

review_app = typer.Typer(
    help="The review loop: pseudo-labels out to QuPath, a pathologist's corrections back (docs/review.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(review_app, name="review")


@review_app.command("export", cls=Command)
@handle_errors
def review_export(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN",
            help="A training run (pathweak train -o RUN), a cohort run's out folder, or results stores of `pathweak predict` (a folder or one .zarr).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder receiving <slide_id>.geojson per slide (default: RUN/review)."),
    ] = None,
    queue: Annotated[
        int, typer.Option(help="Tiles per slide in the review queue (annotations of class Review, ranked).")
    ] = _EXPORT["queue"],
    seed: Annotated[
        int | None, typer.Option(help="Seed of the objects' UUIDs (default: random), for reproducible files.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the files written and their queues as JSON.")] = False,
) -> None:
    """Write one QuPath GeoJSON per slide for review: every tile a detection classified with the model's
    pseudo-label or predicted class, its scores as measurements, and the review queue (the tiles where one
    correction should teach the model most) as annotations of class Review with a rank. Reclassify tiles
    in QuPath (Set classification), draw annotations of a class, export the objects as GeoJSON, and train
    with `pathweak train ... --instance-labels FOLDER` (see docs/review.md)."""
    from pathweak.heatmap.review import export_review

    files = export_review(run, out, queue, seed=seed, progress=progress)
    if as_json:
        rows = [
            {
                "slide_id": f.slide_id,
                "file": str(f.path),
                "tiles": f.tiles,
                "queue": f.queue,
                "predicted": f.predicted,
                "label": f.label,
            }
            for f in files
        ]
        typer.echo(json.dumps({"files": rows}, indent=2))
        return
    for f in files:
        typer.echo(f"{f.path} ({f.tiles} tiles, {len(f.queue)} in the review queue)")
