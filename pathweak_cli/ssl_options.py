"""The options of ``pathweak pretrain`` and ``pathweak distill`` read into an SSLConfig (command line >
the config file's ``ssl:`` section > the default), kept beside the model commands so they stay short."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._conventions import explicit


def ssl_values(ctx: typer.Context, config: Path | None, given: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """SSLConfig fields by the one precedence rule: an option given on the command line > the config file's
    ``ssl:`` section > the default (SSLConfig's, or ``SSLConfig.tiny()``'s with --tiny). ``given`` maps
    option name -> (SSLConfig field, value)."""
    from pathweak.config import load_yaml, merge_options

    on_command_line = explicit(ctx)
    values = merge_options(
        dict(load_yaml(config).get("ssl", {})) if config else {},
        {key: str(v) if isinstance(v, Path) else v for name, (key, v) in given.items() if name in on_command_line},
    )
    for key in ("global_scale", "local_scale", "mae_scale"):
        if key in values:
            values[key] = tuple(values[key])
    return values


CpuPreset = Annotated[
    bool,
    typer.Option(
        "--cpu",
        help="Start from the many-cheap-steps CPU recipe (4-block ViT-Tiny at 64 px, batch 128; "
        "docs/pretraining_and_features.md). Use --select last with it.",
    ),
]
SELECT_HELP = "The exported weights: rankme (the epoch of highest RankMe on held-out tiles) or last."


def ssl_config(method: str, values: dict[str, Any], tiny: bool, cpu: bool) -> Any:
    """SSLConfig from the preset chosen (--tiny, --cpu or none) and the values given."""
    from pathweak.errors import ConfigError
    from pathweak.ssl import SSLConfig

    if tiny and cpu:
        raise ConfigError("--tiny and --cpu are two presets", fix="pick one of them")
    if tiny or cpu:
        start = SSLConfig.tiny if tiny else SSLConfig.cpu
        return start(values.pop("method", method), **values)
    return SSLConfig(**{"method": method, **values})


def print_pretrain(result: Any, **extra: Any) -> None:
    typer.echo(
        json.dumps(
            {
                "encoder": f"pathweak:{result.encoder_dir}",
                **extra,
                "steps": result.steps,
                "epochs": result.epochs,
                "best_checkpoint": result.best_checkpoint,
                "rankme": result.rankme,
            },
            indent=2,
        )
    )
