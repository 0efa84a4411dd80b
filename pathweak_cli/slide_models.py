"""CLI commands on a cohort's features beyond MIL training: ``embed-slides`` (one vector per slide: mean or
FEATHER) and ``zero-shot`` (tiles and slides scored against text prompts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._app import app, handle_errors
from ._conventions import Command, paths

FeaturesArgs = Annotated[
    list[str],
    typer.Argument(metavar="FEATURES", help="FeatureStores (<slide>.zarr), a features/<encoder_id>/ folder or globs."),
]
SLIDE_METHODS = ("mean", "feather-conch-v1.5", "feather-uni2-h", "feather-uni")  # features.slide_embed.METHODS


@app.command("embed-slides", cls=Command)
@handle_errors
def embed_slides(
    features: FeaturesArgs,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder: OUT/features/<encoder_id>-slide-<method>/<slide_id>.zarr."),
    ],
    method: Annotated[
        str,
        typer.Option(
            help=f"{', '.join(SLIDE_METHODS)}: the mean tile feature, or FEATHER's attention-pooled 512-d slide feature (MIL-Lab's pretrained ABMIL, on the features of its patch encoder)."
        ),
    ] = "mean",
    weights: Annotated[
        Path | None,
        typer.Option(help="FEATHER's weights: a file or hub snapshot folder (default: the local HF cache)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    force: Annotated[bool, typer.Option(help="Recompute even when the slide's embedding is up to date.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """One embedding per slide, written as a one-row FeatureStore that `pathweak train` reads as a bag of one
    (e.g. `pathweak train OUT/features/<encoder_id>-slide-feather-conch-v1.5 --head mean ...`)."""
    from pathweak.features.slide_embed import embed_slides as run

    results = run(paths(features), method, out, weights=weights, device=device, force=force)
    for r in results:
        for warning in r.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps([vars(r) for r in results], indent=2))
        return
    for r in results:
        typer.echo(f"{r.slide_id}: {r.status} ({r.dim}) -> {r.store}")


@app.command("zero-shot", cls=Command)
@handle_errors
def zero_shot(
    features: FeaturesArgs,
    prompts: Annotated[
        Path,
        typer.Option(help="YAML with classes: {name: [prompt names]} and optional templates: [... CLASSNAME ...]."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: OUT/results/zero-shot-<model>-<prompts>/ (default: beside the features).",
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="The text tower: conch (on features of --encoder conch).")] = "conch",
    weights: Annotated[
        Path | None,
        typer.Option(help="The model's whole checkpoint: a file or hub snapshot folder (default: the local HF cache)."),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="The tokeniser JSON (CONCH: conch_byte_level_bpe_uncased.json; default: beside the weights)."
        ),
    ] = None,
    topk: Annotated[
        int, typer.Option(help="Slide score: the mean of each class's K highest tile logits (MI-Zero).")
    ] = 50,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Score tiles and slides against text prompts with a multimodal model's text tower (no training): per-tile
    prob_<class> in results stores (heatmaps and QuPath exports read them), slide scores in predictions.csv."""
    from pathweak.train.zero_shot import zero_shot as run

    results = run(
        paths(features), prompts, out, model=model, weights=weights, tokenizer=tokenizer, topk=topk, device=device
    )
    if as_json:
        typer.echo(json.dumps([vars(r) for r in results], indent=2))
        return
    for r in results:
        scores = ", ".join(f"{k}={v:.3f}" for k, v in r.slide_scores.items())
        typer.echo(f"{r.slide_id}: {r.predicted} ({scores}) -> {r.results}")
