"""CLI commands of the head stage: train, predict, heads list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import app, handle_errors

heads_app = typer.Typer(help="MIL heads trained on cached features.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(heads_app, name="heads")


@heads_app.command("list")
@handle_errors
def heads_list() -> None:
    """List the registered heads, what they do and their options (for --head and --head-opt)."""
    from rich.console import Console
    from rich.table import Table

    from pathweak.heads import head_info

    table = Table("head", "what", "options (--head-opt KEY=VALUE)")
    for row in head_info():
        table.add_row(row["name"], row["description"], row["options"])
    Console().print(table)


@app.command()
@handle_errors
def train(
    features: Annotated[
        list[str], typer.Option("--features", help="FeatureStores, a features/<encoder_id>/ folder, or globs.")
    ],
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
    head: Annotated[
        str,
        typer.Option(
            help="Head name (see `pathweak heads list`): mean, max, abmil, clam_sb, clam_mb, transmil, dsmil."
        ),
    ] = "abmil",
    head_opt: Annotated[
        list[str] | None, typer.Option("--head-opt", help="Head option KEY=VALUE, repeatable (e.g. hidden=512).")
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="auto, binary, multiclass, regression, survival (time, event columns) or proportion (share of positive tiles in [0, 1]; per-tile probabilities). auto: numbers with decimals or >10 values are regression."
        ),
    ] = "auto",
    survival_loss: Annotated[
        str,
        typer.Option(
            help="Survival: cox (partial likelihood over the bags of a step, 16 bags per step unless --bags-per-step > 1) or discrete (time-binned likelihood)."
        ),
    ] = "cox",
    survival_bins: Annotated[
        int, typer.Option(help="Survival, discrete loss: time bins (edges at quantiles of the training event times).")
    ] = 4,
    eval_times: Annotated[
        str | None,
        typer.Option(
            help="Survival: comma-separated times of the time-dependent AUC (default: quartiles of the event times)."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Class order, comma-separated; the last of two is the positive class. Other labels are an error."
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(help="Cross-validation folds, grouped by patient and stratified (ignored with a split column)."),
    ] = 5,
    val_fraction: Annotated[
        float, typer.Option(help="Share of each fold's training patients held out for early stopping.")
    ] = 0.2,
    seeds: Annotated[str, typer.Option(help="Training seeds, comma-separated; metrics report their spread.")] = "0",
    split_seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    epochs: Annotated[int, typer.Option(help="Maximum epochs per fold.")] = 50,
    min_epochs: Annotated[int, typer.Option(help="Epochs before early stopping may stop.")] = 5,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a lower validation loss.")] = 10,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 1e-4,
    bags_per_step: Annotated[
        int, typer.Option(help="Bags averaged per optimiser step (1 = the usual MIL batch of one slide).")
    ] = 1,
    balance: Annotated[bool, typer.Option(help="Weight classes by inverse frequency in the loss.")] = True,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples (by patient) for the 95% CIs; 0 skips them.")
    ] = 1000,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda[:N].")] = "auto",
    precision: Annotated[
        str, typer.Option(help="Lightning precision; auto: bf16-mixed on CUDA, 32-true on CPU.")
    ] = "auto",
    dtype: Annotated[
        str, typer.Option(help="Feature dtype in the bank: float16 (as stored), bfloat16 or float32.")
    ] = "float16",
    stream: Annotated[
        str,
        typer.Option(
            help="auto: keep the cohort in memory when it fits, else read bags from disk; yes; no (error when it does not fit)."
        ),
    ] = "auto",
    devices: Annotated[
        str,
        typer.Option(
            help="Processes (Lightning DDP, one per device): 1, N or all (every GPU); on a CPU N gloo processes."
        ),
    ] = "1",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print run.json's summary as JSON.")] = False,
) -> None:
    """Train a MIL head on cached features with patient-level cross-validation; writes metrics (with
    bootstrap 95% CIs and the spread across seeds), per-fold predictions and packaged models
    (see docs/training.md)."""
    from pathweak.errors import ConfigError
    from pathweak.train import TrainConfig, train_cohort

    streams = {"auto": "auto", "yes": True, "no": False}
    if stream not in streams:
        raise ConfigError(f"unknown --stream {stream!r}", fix="use auto, yes or no")
    cfg = TrainConfig(
        head=head,
        head_options=_options(head_opt or []),
        task=task,
        classes=tuple(c.strip() for c in classes.split(",")) if classes else None,
        folds=folds,
        val_fraction=val_fraction,
        seeds=_ints(seeds, "--seeds"),
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
        eval_times=_floats(eval_times, "--eval-times") if eval_times else None,
    )
    run = train_cohort(features, labels, out, cfg, progress=progress)
    s = run.summary
    if as_json:
        typer.echo(
            json.dumps(
                {k: s[k] for k in ("model_id", "head", "task", "classes", "metrics", "splits", "seconds")},
                indent=2,
                default=str,
            )
        )
        return
    typer.echo(
        f"{s['head']} ({s['task']}, {s['labels']['slides']} slides, {s['splits']['source']}, "
        f"seeds {', '.join(s['seeds'])}) in {s['seconds']} s"
    )
    first = s["seeds"][next(iter(s["seeds"]))]
    for name, m in s["metrics"].items():
        ci = first["ci95"].get(name)
        ci_text = f"  (seed {next(iter(s['seeds']))} 95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        typer.echo(f"  {name}: {m['mean']:.3f} ± {m['std']:.3f}{ci_text}")
    typer.echo(
        f"run: {run.out_dir} (predict with: pathweak predict --model {run.out_dir} --features ...; "
        f"report: pathweak report {run.out_dir})"
    )


@app.command()
@handle_errors
def predict(
    model: Annotated[
        Path,
        typer.Option(help="A training run folder (its fold models are averaged) or one models/<seed_fold> folder."),
    ],
    features: Annotated[
        list[str], typer.Option("--features", help="FeatureStores, a features/<encoder_id>/ folder, or globs.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder receiving results/<model_id>/ (default: beside features/)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the results folder (default: the model id).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
) -> None:
    """Slide scores plus per-tile scores and attention of a trained model, written as results stores
    (docs/results_format.md) that `pathweak heatmap` and `pathweak export` read."""
    from pathweak.train import predict_slides

    results = predict_slides(model, features, out, name=name, device=device, progress=progress)
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


def _floats(text: str, option: str) -> tuple[float, ...]:
    from pathweak.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a comma-separated list of numbers", fix=f"e.g. {option} 12,24"
        ) from None


def _ints(text: str, option: str) -> tuple[int, ...]:
    from pathweak.errors import ConfigError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a comma-separated list of integers", fix=f"e.g. {option} 0,1,2"
        ) from None


@app.command()
@handle_errors
def report(
    run: Annotated[
        Path, typer.Argument(help="A training run folder (pathweak train -o RUN) or a cohort run's out folder.")
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
) -> None:
    """Write RUN/report.html (self-contained, opens offline in a browser) and its PNGs in RUN/report_files/:
    the metrics table; ROC and PR curves with bootstrap bands, calibration and the confusion matrix
    (classification); Kaplan-Meier curves of predicted risk groups with the log-rank p (survival); predicted
    vs true (regression, proportion); training curves per fold; and for a sample of slides the heatmap next
    to the highest- and lowest-scoring tiles (see docs/training.md)."""
    from pathweak.report import write_report

    typer.echo(str(write_report(run, slides=slides, tiles=tiles, bootstrap=bootstrap, features=features)))
