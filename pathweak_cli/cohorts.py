"""CLI commands for cohort batch jobs: cohort run, cohort status, and the demo (a cohort run on the sample data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pathweak.cohort.demo import demo_settings

from ._app import _err, app, handle_errors, json_stdout
from ._conventions import Command, deprecated, function_defaults, merged, names, warn

OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="The run folder (default: the spec's out:, relative to the spec's folder)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print summary.json instead of summary.md.")]


def _load(spec: Path, out: Path | None) -> Any:
    """The cohort spec, with its ``out:`` replaced by ``-o/--out`` when given."""
    from dataclasses import replace

    from pathweak.cohort import CohortSpec

    cs = CohortSpec.load(spec)
    return replace(cs, out=out.resolve()) if out is not None else cs


cohort_app = typer.Typer(
    help="Manifest-driven cohort runs (tile, pretrain, extract, train, predict, heatmaps).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cohort_app, name="cohort")

_DEMO = function_defaults(demo_settings)


@cohort_app.command("run", cls=Command)
@handle_errors
def cohort_run(
    spec: Annotated[
        Path,
        typer.Argument(
            metavar="SPEC", help="The cohort YAML (manifest, out, and stage settings; see docs/cohorts.md)."
        ),
    ],
    retry_failed: Annotated[bool, typer.Option(help="Retry slides that failed in an earlier run.")] = False,
    executor: Annotated[str | None, typer.Option(help="local (process pool) or dask.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler (with --executor dask).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes of the local pool or the LocalCluster (default: the spec's, else 2)."),
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option("--stage", help=f"A stage to run, one of {names('stages')} (repeatable; default: all)."),
    ] = None,
    out: OutOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars (on a terminal only).")] = True,
    as_json: JsonOpt = False,
    stages_old: Annotated[list[str] | None, deprecated("--stages", "--stage")] = None,
) -> None:
    """Run a cohort end to end; every stage skips valid, up-to-date outputs, so a rerun resumes.

    Writes OUT/summary.md and OUT/summary.json (what ran, was skipped, failed and why; where outputs are).
    Exit status 1 when any slide failed."""
    from pathweak.cohort import run_cohort

    wanted = tuple(merged(stage, stages_old, "--stages", "--stage")) or None
    report = run_cohort(
        _load(spec, out),
        retry_failed=retry_failed,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        stages=wanted,
        progress=progress,
    )
    _finish(report, as_json)


def _finish(report: Any, as_json: bool = False) -> None:
    """Print the run's summary (markdown, or summary.json with --json); the failed slides once on stderr."""
    summary = report.summary_json if as_json else report.summary_md
    typer.echo(summary.read_text() if summary else "")
    for text in report.warnings:  # also in the summary's Warnings section
        warn(text)
    if report.failed_slides:
        for sid, why in report.failed_slides.items():
            _err(f"{sid}: {why}")
        raise typer.Exit(1)


@app.command(cls=Command)
@handle_errors
def demo(
    data: Annotated[Path, typer.Option(help="Where the sample cohort is (generated there when missing).")] = Path(
        "sample_data/cohort"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the run.")] = Path("runs/demo"),
    workers: Annotated[int, typer.Option(help="Worker processes (tiling, extraction, heatmaps).")] = _DEMO["workers"],
    pretrain_minutes: Annotated[float, typer.Option(help="Self-supervised (MAE) pretraining budget.")] = _DEMO[
        "pretrain_minutes"
    ],
    progress: Annotated[bool, typer.Option(help="Show progress bars (on a terminal only).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the shipped sample data, end to end: generate the synthetic cohort, tile it,
    pretrain a small ViT (MAE), extract features, cross-validate an ABMIL model, predict every slide and
    write heatmap PNGs and QuPath GeoJSON. A few minutes on 2 CPU cores; a rerun skips what is done.

    Writes OUT/cohort.yaml (rerun or edit it with `pathweak cohort run`) and OUT/summary.md."""
    from pathweak.cohort import run_cohort
    from pathweak.cohort.demo import write_demo_spec
    from pathweak.synthetic import make_sample_cohort

    slides = make_sample_cohort(data)
    if not as_json:
        typer.echo(f"sample cohort: {len(slides)} slides in {data} (manifest: {data / 'labels.csv'})")
    spec = write_demo_spec(data, out, pretrain_minutes, workers)
    report = run_cohort(spec, progress=progress)
    if not as_json:
        typer.echo(f"cohort spec: {spec.source}")
    _finish(report, as_json)


@cohort_app.command("status", cls=Command)
@handle_errors
@json_stdout
def cohort_status(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="The cohort YAML.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The run folder, when `cohort run -o` moved it from the spec's.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the status's only form; accepted for uniformity).")
    ] = False,
) -> None:
    """Per-slide state of a cohort's last runs (stage: status), as JSON."""
    from pathweak.cohort.state import StateStore

    cs = _load(spec, out)
    store = StateStore(cs.out)
    rows = {s.slide_id: {k: v.status for k, v in store.load(s.slide_id).stages.items()} for s in cs.slides}
    typer.echo(json.dumps(rows, indent=2))
