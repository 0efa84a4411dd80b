"""CLI commands of the head stage: train, predict, heads list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pathweak.train.config import TrainConfig
from pathweak.train.predict import predict_slides

from . import finetune_options as ft
from ._app import app, handle_errors
from ._conventions import (
    Command,
    default,
    deprecated,
    function_defaults,
    inputs,
    merged,
    names,
    numbers,
    paths,
    warn,
)
from ._train_output import print_run

FeaturesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="FEATURES", help="FeatureStores, a features/<encoder_id>/ folder, or globs.", show_default=False
    ),
]
OldFeatures = Annotated[list[str] | None, deprecated("--features", "the FEATURES arguments")]
_FEATURES_EXAMPLE = "runs/x/features/<encoder_id>/"


_PREDICT = function_defaults(predict_slides)


def _train_default(name: str) -> Any:
    return default(TrainConfig, name)


heads_app = typer.Typer(help="MIL heads trained on cached features.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(heads_app, name="heads")


@heads_app.command("list", cls=Command)
@handle_errors
def heads_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the heads as JSON.")] = False,
) -> None:
    """List the registered heads, what they do and their options (for --head and --head-opt)."""
    from rich.console import Console
    from rich.table import Table

    from pathweak.heads import head_info

    if as_json:
        typer.echo(json.dumps(head_info(), indent=2))
        return
    table = Table("head", "what", "options (--head-opt KEY=VALUE)")
    for row in head_info():
        table.add_row(row["name"], row["description"], row["options"])
    Console().print(table)


@app.command(cls=Command)
@handle_errors
def train(
    labels: Annotated[
        Path,
        typer.Option(
            help="CSV with slide_id, patient_id, label (+ optional split: train/val/test); survival: time and event instead of label; proportion: label in [0, 1]."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder: run.json, predictions, models/, splits.csv, logs/ (replaced if it exists)."
        ),
    ],
    features: FeaturesArg = None,
    head: Annotated[
        str, typer.Option(help=f"Head name: {names('heads')} (see `pathweak heads list`).")
    ] = _train_default("head"),
    head_opt: Annotated[
        list[str] | None, typer.Option("--head-opt", help="Head option KEY=VALUE, repeatable (e.g. hidden=512).")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start --head abmil from pretrained FEATHER weights: feather-conch-v1.5, feather-uni2-h or feather-uni."
        ),
    ] = None,
    init_weights: Annotated[
        Path | None,
        typer.Option(help="The --init model's weights: a file or hub snapshot folder (default: the local HF cache)."),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help=f"{names('tasks')}: survival needs time and event columns; proportion: the share of positive tiles in [0, 1] (per-tile probabilities). auto: numbers with decimals or >10 values are regression."
        ),
    ] = _train_default("task"),
    survival_loss: Annotated[
        str,
        typer.Option(
            help=f"Survival loss ({names('survival_losses')}): cox (partial likelihood over the bags of a step, 16 bags per step unless --bags-per-step > 1) or discrete (time-binned likelihood)."
        ),
    ] = _train_default("survival_loss"),
    survival_bins: Annotated[
        int, typer.Option(help="Survival, discrete loss: time bins (edges at quantiles of the training event times).")
    ] = _train_default("survival_bins"),
    eval_time: Annotated[
        list[str] | None,
        typer.Option(
            "--eval-time",
            help="Survival: a time of the time-dependent AUC (repeatable; default: quartiles of the event times).",
        ),
    ] = None,
    label_augmentation: Annotated[
        str | None,
        typer.Option(
            help="rotation: self-supervised label augmentation on features extracted with `extract --rotations 4`: the head learns joint (class x rotation) labels and averages over the rotations at prediction (classification; not CLAM)."
        ),
    ] = _train_default("label_augmentation"),
    class_: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            help="A class, in order (repeatable; default: sorted); the last of two is the positive class. Other labels are an error.",
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(help="Cross-validation folds, grouped by patient and stratified (ignored with a split column)."),
    ] = _train_default("folds"),
    val_fraction: Annotated[
        float, typer.Option(help="Share of each fold's training patients held out for early stopping.")
    ] = _train_default("val_fraction"),
    seed: Annotated[
        list[str] | None,
        typer.Option(
            "--seed",
            help=f"A training seed (repeatable, e.g. --seed 0 --seed 1 --seed 2; metrics report their spread; default: {', '.join(map(str, _train_default('seeds')))}).",
        ),
    ] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = _train_default("split_seed"),
    epochs: Annotated[int, typer.Option(help="Maximum epochs per fold.")] = _train_default("max_epochs"),
    min_epochs: Annotated[int, typer.Option(help="Epochs before early stopping may stop.")] = _train_default(
        "min_epochs"
    ),
    patience: Annotated[
        int, typer.Option(help="Stop after this many epochs without a lower validation loss.")
    ] = _train_default("patience"),
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = _train_default("lr"),
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = _train_default("weight_decay"),
    bags_per_step: Annotated[
        int, typer.Option(help="Bags averaged per optimiser step (1 = the usual MIL batch of one slide).")
    ] = _train_default("bags_per_step"),
    balance: Annotated[bool, typer.Option(help="Weight classes by inverse frequency in the loss.")] = _train_default(
        "balance"
    ),
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples (by patient) for the 95% CIs; 0 skips them.")
    ] = _train_default("bootstrap"),
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda[:N].")] = _train_default(
        "device"
    ),
    precision: Annotated[
        str,
        typer.Option(help="Lightning precision; auto: bf16-mixed on CUDA (16-mixed without bf16), 32-true on CPU."),
    ] = _train_default("precision"),
    dtype: Annotated[
        str, typer.Option(help="Feature dtype in the bank: float16 (as stored), bfloat16 or float32.")
    ] = _train_default("dtype"),
    stream: Annotated[
        str,
        typer.Option(
            help="auto: keep the cohort in memory when it fits, else read bags from disk; yes; no (error when it does not fit)."
        ),
    ] = str(_train_default("stream")),
    devices: Annotated[
        str,
        typer.Option(
            help="Processes (Lightning DDP, one per device): 1, N or all (every GPU); on a CPU N gloo processes."
        ),
    ] = str(_train_default("devices")),
    finetune_encoder: ft.FinetuneEncoder = None,
    encoder_weights: ft.EncoderWeights = None,
    encoder_lr: ft.EncoderLr = ft.ENCODER_LR,
    frozen_blocks: ft.FrozenBlocks = ft.FROZEN_BLOCKS,
    encoder_epochs: ft.EncoderEpochs = ft.EPOCHS,
    tile_batch: ft.TileBatch = ft.TILE_BATCH,
    encoder_out: ft.EncoderOut = None,
    instance_labels: Annotated[
        Path | None,
        typer.Option(
            "--instance-labels",
            help="A pathologist's per-tile corrections: a QuPath GeoJSON export, a folder of them (one per slide, named <slide_id>.geojson), or a `pathweak ground-truth` CSV (docs/review.md).",
        ),
    ] = None,
    instance_weight: Annotated[
        float, typer.Option(help="Weight of the corrected tiles' cross-entropy beside the bag loss.")
    ] = _train_default("instance_weight"),
    instance_overlap: Annotated[
        float,
        typer.Option(help="Share of a tile's area that must lie inside a correction for the tile to take its class."),
    ] = _train_default("instance_overlap"),
    contradictions: Annotated[
        str,
        typer.Option(
            help="A corrected tile of a class its slide's label excludes: slide (the slide label wins, the correction is left out), tile (trained on as corrected) or error."
        ),
    ] = _train_default("contradictions"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print run.json's summary as JSON.")] = False,
    features_old: OldFeatures = None,
    seeds_old: Annotated[list[str] | None, deprecated("--seeds", "--seed")] = None,
    classes_old: Annotated[list[str] | None, deprecated("--classes", "--class")] = None,
    eval_times_old: Annotated[list[str] | None, deprecated("--eval-times", "--eval-time")] = None,
) -> None:
    """Train a MIL head on cached features with patient-level cross-validation; writes metrics (with
    bootstrap 95% CIs and the spread across seeds), per-fold predictions and packaged models
    (see docs/training.md). With --finetune-encoder: INS trained end to end on TileStores."""
    from pathweak.errors import ConfigError

    kind = "TileStores" if finetune_encoder else "FeatureStores"
    found = inputs(
        features, features_old, "--features", kind, "runs/x/tiles/" if finetune_encoder else _FEATURES_EXAMPLE
    )
    streams: dict[str, bool | str] = {"auto": "auto", "yes": True, "no": False}
    if stream not in streams:
        raise ConfigError(f"unknown --stream {stream!r}", fix="use auto, yes or no")
    seeds = merged(seed, seeds_old, "--seeds", "--seed")
    classes = merged(class_, classes_old, "--classes", "--class")
    eval_times = merged(eval_time, eval_times_old, "--eval-times", "--eval-time")
    cfg = TrainConfig(
        head=head,
        head_options=_options(head_opt or []),
        task=task,
        classes=tuple(classes) if classes else None,
        folds=folds,
        val_fraction=val_fraction,
        seeds=numbers(seeds, "--seed", int) if seeds else _train_default("seeds"),
        split_seed=split_seed,
        max_epochs=epochs,
        min_epochs=min_epochs,
        patience=patience,
        lr=lr,
        weight_decay=weight_decay,
        bags_per_step=bags_per_step,
        balance=balance,
        bootstrap=bootstrap,
        precision=precision,
        device=device,
        dtype=dtype,
        stream=streams[stream],
        devices=devices,
        survival_loss=survival_loss,
        survival_bins=survival_bins,
        eval_times=numbers(eval_times, "--eval-time") if eval_times else None,
        label_augmentation=label_augmentation,
        init=init,
        init_weights=str(init_weights) if init_weights else None,
        instance_weight=instance_weight,
        instance_overlap=instance_overlap,
        contradictions=contradictions,
    )
    corrections = None
    if instance_labels is not None:
        if finetune_encoder:
            raise ConfigError(
                "--instance-labels does not combine with --finetune-encoder yet (the fine-tuning learns from "
                "INS's pseudo-labels only)",
                fix="fine-tune the encoder first, then train on its features with --instance-labels",
            )
        from pathweak.heatmap.corrections import read_corrections

        corrections = read_corrections(instance_labels, paths(found), cfg.instance_overlap)
    if finetune_encoder:
        values = dict(encoder=finetune_encoder, weights=encoder_weights, encoder_lr=encoder_lr, epochs=encoder_epochs,
                      frozen_blocks=frozen_blocks, tile_batch=tile_batch, encoder_out=encoder_out)  # fmt: skip
        run = ft.run_end_to_end(paths(found), labels, out, cfg, values, progress)
    else:
        from pathweak.train import train_cohort  # torch: after the options are checked

        run = train_cohort(paths(found), labels, out, cfg, progress=progress, instance_labels=corrections)
    print_run(run, as_json)


@app.command(cls=Command)
@handle_errors
def predict(
    model: Annotated[
        Path,
        typer.Option(help="A training run folder (its fold models are averaged) or one models/<seed_fold> folder."),
    ],
    features: FeaturesArg = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder receiving results/<model_id>/ (default: beside features/)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the results folder (default: the model id).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = _PREDICT["device"],
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
    features_old: OldFeatures = None,
) -> None:
    """Slide scores plus per-tile scores and attention of a trained model, written as results stores
    (docs/results_format.md) that `pathweak heatmap` and `pathweak export` read."""
    from pathweak.train import predict_slides

    found = inputs(features, features_old, "--features", "FeatureStores", _FEATURES_EXAMPLE)
    results = predict_slides(model, paths(found), out, name=name, device=device, progress=progress)
    if results and results[0].excluded:
        warn(
            f"degenerate fold model(s) {', '.join(results[0].excluded)} left out of the average "
            f"(see {model / 'run.json'}: ensemble)"
        )
    for r in results:
        if r.warning:
            warn(r.warning)
    if as_json:
        typer.echo(json.dumps([vars(r) for r in results], indent=2))
        return
    for r in results:
        scores = ", ".join(f"{k}={v:.3f}" for k, v in r.slide_scores.items())
        typer.echo(f"{r.slide_id}: {r.predicted + ' ' if r.predicted else ''}({scores}) -> {r.results}")


def _options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are read as YAML scalars (numbers, true/false, null)."""
    import yaml

    from pathweak.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--head-opt {item!r} is not KEY=VALUE", fix="e.g. --head-opt hidden=512")
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command(cls=Command)
@handle_errors
def report(
    run: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", help="A training run folder (pathweak train -o RUN) or a cohort run's out folder."
        ),
    ],
    slides: Annotated[
        int, typer.Option(help="Slides shown with a heatmap and a gallery of their highest- and lowest-scoring tiles.")
    ] = 4,
    tiles: Annotated[int, typer.Option(help="Tiles in each row of a slide's gallery.")] = 6,
    bootstrap: Annotated[int, typer.Option(help="Patient bootstrap resamples of the ROC / PR bands.")] = 200,
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features",
            help="FeatureStores of the slides, when the run does not record them (runs before this version).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder receiving report.html and report_files/ (default: the run's folder)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report's path as JSON.")] = False,
) -> None:
    """Write RUN/report.html (self-contained, opens offline in a browser) and its PNGs in RUN/report_files/:
    the metrics table; ROC and PR curves with bootstrap bands, calibration and the confusion matrix
    (classification); Kaplan-Meier curves of predicted risk groups with the log-rank p (survival); predicted
    vs true (regression, proportion); training curves per fold; and for a sample of slides the heatmap next
    to the highest- and lowest-scoring tiles (see docs/training.md)."""
    from dataclasses import replace

    from pathweak.report import write_report
    from pathweak.report.build import find_run

    source = find_run(run)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        source = replace(source, out=out)
    found = paths(features) if features else None
    page = write_report(source, slides=slides, tiles=tiles, bootstrap=bootstrap, features=found)
    typer.echo(json.dumps({"report": str(page)}, indent=2) if as_json else str(page))
