"""CLI commands for cohort batch jobs: cohort run, cohort status, and the demo (a cohort run on the sample data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._app import _err, app, handle_errors

cohort_app = typer.Typer(
    help="Manifest-driven cohort runs (tile, pretrain, extract, train, predict, heatmaps).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cohort_app, name="cohort")


@cohort_app.command("run")
@handle_errors
def cohort_run(
    spec: Annotated[
        Path, typer.Argument(help="The cohort YAML (manifest, out, and stage settings; see docs/cohorts.md).")
    ],
    retry_failed: Annotated[bool, typer.Option(help="Retry slides that failed in an earlier run.")] = False,
    executor: Annotated[str | None, typer.Option(help="local (process pool) or dask.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler (with --executor dask).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (local pool or LocalCluster).")] = None,
    stages: Annotated[str | None, typer.Option(help="Comma-separated stages to run (default: all).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a cohort end to end; every stage skips valid, up-to-date outputs, so a rerun resumes.

    Writes OUT/summary.md and OUT/summary.json (what ran, was skipped, failed and why; where outputs are).
    Exit status 1 when any slide failed."""
    from pathweak.cohort import CohortSpec, run_cohort

    wanted = tuple(s.strip() for s in stages.split(",")) if stages else None
    report = run_cohort(
        CohortSpec.load(spec),
        retry_failed=retry_failed,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        stages=wanted,
        progress=progress,
    )
    _finish(report)


def _finish(report) -> None:  # noqa: ANN001 - a CohortReport
    typer.echo(report.summary_md.read_text() if report.summary_md else "")
    if report.failed_slides:
        for sid, why in report.failed_slides.items():
            _err(f"{sid}: {why}")
        raise typer.Exit(1)


@app.command()
@handle_errors
def demo(
    data: Annotated[Path, typer.Option(help="Where the sample cohort is (generated there when missing).")] = Path(
        "sample_data/cohort"
    ),
    out: Annotated[Path, typer.Option(help="Output folder of the run.")] = Path("runs/demo"),
    workers: Annotated[int, typer.Option(help="Worker processes (tiling, extraction, heatmaps).")] = 2,
    pretrain_minutes: Annotated[float, typer.Option(help="Self-supervised (MAE) pretraining budget.")] = 1.5,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The main job on the shipped sample data, end to end: generate the synthetic cohort, tile it,
    pretrain a small ViT (MAE), extract features, cross-validate an ABMIL model, predict every slide and
    write heatmap PNGs and QuPath GeoJSON. A few minutes on 2 CPU cores; a rerun skips what is done.

    Writes OUT/cohort.yaml (rerun or edit it with `pathweak cohort run`) and OUT/summary.md."""
    from pathweak.cohort import run_cohort
    from pathweak.cohort.demo import write_demo_spec
    from pathweak.synthetic import make_sample_cohort

    slides = make_sample_cohort(data)
    typer.echo(f"sample cohort: {len(slides)} slides in {data} (manifest: {data / 'labels.csv'})")
    spec = write_demo_spec(data, out, pretrain_minutes, workers)
    report = run_cohort(spec, progress=progress)
    typer.echo(f"cohort spec: {spec.source}")
    _finish(report)


@cohort_app.command("status")
@handle_errors
def cohort_status(
    spec: Annotated[Path, typer.Argument(help="The cohort YAML.")],
) -> None:
    """Per-slide state of a cohort's last runs (stage: status), as JSON."""
    from pathweak.cohort import CohortSpec
    from pathweak.cohort.state import StateStore

    cs = CohortSpec.load(spec)
    store = StateStore(cs.out)
    rows = {s.slide_id: {k: v.status for k, v in store.load(s.slide_id).stages.items()} for s in cs.slides}
    typer.echo(json.dumps(rows, indent=2))
