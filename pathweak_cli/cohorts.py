"""CLI commands for cohort batch jobs: cohort run, cohort status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import _err, app, handle_errors

cohort_app = typer.Typer(help="Manifest-driven cohort runs (tile, pretrain, extract, train, predict, heatmaps).",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cohort_app, name="cohort")


@cohort_app.command("run")
@handle_errors
def cohort_run(
    spec: Annotated[Path, typer.Argument(help="The cohort YAML (manifest, out, and stage settings; see docs/cohorts.md).")],
    retry_failed: Annotated[bool, typer.Option(help="Retry slides that failed in an earlier run.")] = False,
    executor: Annotated[Optional[str], typer.Option(help="local (process pool) or dask.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Address of an existing Dask scheduler (with --executor dask).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (local pool or LocalCluster).")] = None,
    stages: Annotated[Optional[str], typer.Option(help="Comma-separated stages to run (default: all).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a cohort end to end; every stage skips valid, up-to-date outputs, so a rerun resumes.

    Writes OUT/summary.md and OUT/summary.json (what ran, was skipped, failed and why; where outputs are).
    Exit status 1 when any slide failed."""
    from pathweak.cohort import CohortSpec, run_cohort

    wanted = tuple(s.strip() for s in stages.split(",")) if stages else None
    report = run_cohort(CohortSpec.load(spec), retry_failed=retry_failed, executor=executor, workers=workers,
                        scheduler=scheduler, stages=wanted, progress=progress)
    typer.echo(report.summary_md.read_text() if report.summary_md else "")
    if report.failed_slides:
        for sid, why in report.failed_slides.items():
            _err(f"{sid}: {why}")
        raise typer.Exit(1)


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
