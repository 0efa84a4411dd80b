"""What ``pathweak train`` prints: the run's summary as JSON (``--json``) or a few lines of text."""

from __future__ import annotations

import json
from typing import Any

import typer

from ._conventions import warn


def print_run(run: Any, as_json: bool) -> None:
    """Print a :class:`pathweak.train.run.TrainRun`: its warnings, then its summary."""
    s = run.summary
    for text in s.get("warnings", []):  # recorded in run.json too (a degenerate fold model among them)
        warn(text)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    k: s[k]
                    for k in (
                        "model_id",
                        "head",
                        "task",
                        "classes",
                        "metrics",
                        "splits",
                        "seconds",
                        "warnings",
                        "finetune",
                        "instance_labels",
                    )
                    if k in s
                },
                indent=2,
                default=str,
            )
        )
        return
    typer.echo(
        f"{s['head']} ({s['task']}, {s['labels']['slides']} slides, {s['splits']['source']}, "
        f"seeds {', '.join(s['seeds'])}) in {s['seconds']} s"
    )
    if "instance_labels" in s:
        il = s["instance_labels"]
        per_class = ", ".join(f"{c} {n}" for c, n in il["per_class"].items())
        typer.echo(f"  instance labels: {il['tiles']} tiles ({per_class}) in {len(il['per_slide'])} slides")
    first = s["seeds"][next(iter(s["seeds"]))]
    for name, m in s["metrics"].items():
        ci = first["ci95"].get(name)
        ci_text = f"  (seed {next(iter(s['seeds']))} 95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        typer.echo(f"  {name}: {m['mean']:.3f} ± {m['std']:.3f}{ci_text}")
    if "finetune" in s:
        typer.echo(f"fine-tuned encoder: {s['finetune']['encoder']} (features: {s['finetune']['features']})")
    typer.echo(
        f"run: {run.out_dir} (predict with: pathweak predict FEATURES... --model {run.out_dir}; "
        f"report: pathweak report {run.out_dir})"
    )
