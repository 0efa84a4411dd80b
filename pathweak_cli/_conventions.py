"""The CLI convention of every command (docs/cli.md, "Conventions"): defaults read from the config
dataclasses and the API's signatures, help texts that list the names a registry holds, repeatable list
options and the hidden deprecated spellings of renamed flags.

Reading names and defaults imports no model library: configs and registries are torch-free modules and
every package exports its heavy parts lazily (docs/architecture.md, "Layout by floors"), so the CLI imports
the real dataclasses, functions and registries (tests/test_import_graph.py checks the rule,
tests/test_cli_startup.py that ``pathweak --help`` loads no torch).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

# ---- defaults from the config dataclasses and the API's signatures --------------------------------------


def default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (its factory called)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def defaults(cls: type) -> dict[str, Any]:
    """Every field default of dataclass ``cls`` (factories called; fields without a default left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def function_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of an API function, from its signature."""
    params = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def ssl_default(name: str) -> Any:
    """An SSLConfig field default (``pathweak pretrain`` / ``distill``)."""
    from pathweak.ssl.config import SSLConfig

    return default(SSLConfig, name)


def joined(values: Iterable[Any]) -> str:
    """A tuple default as the option's text form (``(0.5, 99.5)`` -> ``0.5,99.5``; ``(1.0,)*3`` -> ``1``)."""
    items = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return items[0] if len(set(items)) == 1 and len(items) == 3 else ",".join(items)


# ---- names from the registries --------------------------------------------------------------------------


def _heads() -> Sequence[str]:
    from pathweak.heads.registry import HEADS

    return HEADS.names()


def _encoders() -> Sequence[str]:
    from pathweak.encoders.families import ENCODERS
    from pathweak.encoders.presets import PRESETS

    return [*PRESETS, *(f"{n}:" for n in ENCODERS.names())]


def _tissue_methods() -> Sequence[str]:
    from pathweak.tissue.methods import TISSUE_METHODS

    return TISSUE_METHODS.names()


def _artifact_methods() -> Sequence[str]:
    from pathweak.tissue import ARTIFACT_METHODS

    return ARTIFACT_METHODS.names()


def _backends() -> Sequence[str]:
    from pathweak.io.open import BACKENDS

    return ["auto", *BACKENDS.names()]


def _foreground() -> Sequence[str]:
    from pathweak.volumes.foreground import FOREGROUND_METHODS

    return FOREGROUND_METHODS.names()


def _colormaps() -> Sequence[str]:
    from pathweak.heatmap.colormap import COLORMAPS

    return COLORMAPS


def _formats() -> Sequence[str]:
    from pathweak.heatmap.export import FORMATS

    return FORMATS


def _tasks() -> Sequence[str]:
    from pathweak.train.config import TASKS

    return TASKS


def _survival_losses() -> Sequence[str]:
    from pathweak.train.config import SURVIVAL_LOSSES

    return SURVIVAL_LOSSES


def _archs() -> Sequence[str]:
    from pathweak.encoders.archs import ARCHS

    return list(ARCHS)


def _stages() -> Sequence[str]:
    from pathweak.cohort.spec import STAGES

    return STAGES


def _decodes() -> Sequence[str]:
    from pathweak.features.decode import DECODES

    return DECODES


def _planes() -> Sequence[str]:
    from pathweak.config import PLANES

    return PLANES


NAMES: dict[str, Callable[[], Sequence[str]]] = {
    "heads": _heads,
    "encoders": _encoders,
    "tissue_methods": _tissue_methods,
    "artifact_methods": _artifact_methods,
    "backends": _backends,
    "foreground": _foreground,
    "colormaps": _colormaps,
    "formats": _formats,
    "tasks": _tasks,
    "survival_losses": _survival_losses,
    "archs": _archs,
    "stages": _stages,
    "decodes": _decodes,
    "planes": _planes,
}

_PLACEHOLDER = re.compile(r"\{names:(\w+)\}")


def names(kind: str) -> str:
    """Placeholder for the names of registry ``kind`` in a help text, filled in when help is shown."""
    if kind not in NAMES:
        raise KeyError(kind)
    return "{names:" + kind + "}"


def expand(text: str | None) -> str | None:
    """A help text with its ``{names:KIND}`` placeholders replaced by the registry's names."""
    if not text or "{names:" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: ", ".join(NAMES[m.group(1)]()), text)


class Command(TyperCommand):
    """A command whose help texts name what the registries hold when ``--help`` is shown (so importing the
    CLI stays cheap, and a new head, encoder or colormap shows up without editing the CLI)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.help = expand(self.help)
        for param in self.params:
            text = getattr(param, "help", None)
            if isinstance(text, str):
                param.help = expand(text)  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


# ---- given options, lists, deprecated spellings ---------------------------------------------------------


def explicit(ctx: Any) -> set[str]:
    """The parameters given on the command line (or by environment), not left at their defaults."""
    return {
        name
        for name in ctx.params
        if (source := ctx.get_parameter_source(name)) is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
    }


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def deprecated(old: str, new: str) -> Any:
    """A hidden option with the old spelling ``old`` of a renamed flag (kept for one release)."""
    return typer.Option(old, hidden=True, help=f"Deprecated spelling of {new}.")


def merged(new: Sequence[str] | None, old: Sequence[str] | None, old_name: str, new_name: str) -> list[str]:
    """The values of a renamed (list) option: the new spelling's, plus the deprecated one's (comma lists
    split, as the old spelling took them) with a warning."""
    values = list(new or [])
    if old:
        warn(f"{old_name} is deprecated and will be removed in the next release; use {new_name}")
        values += [v.strip() for item in old for v in item.split(",") if v.strip()]
    return values


def inputs(given: Sequence[str] | None, old: Sequence[str] | None, old_name: str, what: str, example: str) -> list[str]:
    """A command's positional inputs, plus those given with the deprecated ``old_name`` option; none at
    all is a usage error (exit 2)."""
    values = list(given or [])
    if old:
        warn(f"{old_name} is deprecated and will be removed in the next release; give the {what} as arguments")
        values += list(old)
    if not values:
        from pathweak.errors import ConfigError

        raise ConfigError(f"no {what} given", fix=f"pass them as arguments, e.g. {example}")
    return values


def paths(values: Iterable[str | Path]) -> list[str | Path]:
    """Command-line paths as the API's ``list[str | Path]``."""
    return list(values)


def numbers(values: Sequence[str], option: str, kind: type = float) -> tuple[Any, ...]:
    """Repeated option values as numbers; a bad one is a clear error."""
    from pathweak.errors import ConfigError

    try:
        return tuple(kind(v) for v in values)
    except ValueError:
        example = f"{option} 12 {option} 24" if kind is float else f"{option} 0 {option} 1"
        raise ConfigError(
            f"{option} takes {'numbers' if kind is float else 'integers'}, got {', '.join(values)}",
            fix=f"repeat the option, e.g. {example}",
        ) from None
