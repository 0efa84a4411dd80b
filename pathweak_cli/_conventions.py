"""The CLI convention of every command (docs/cli.md, "Conventions"): defaults read from the config
dataclasses, help texts that list the names a registry holds, repeatable list options and the hidden
deprecated spellings of renamed flags.

Reading names and defaults imports no model library: a registry or dataclass whose package pulls in
torch (heads, encoders, SSLConfig) is read from its source with ``ast``; the tests check that what is read
equals the live registry or dataclass.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import typer
from typer.core import TyperCommand

PACKAGE = Path(__file__).resolve().parents[1] / "pathweak"


# ---- defaults from the config dataclasses ---------------------------------------------------------------


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


@cache
def source_defaults(module: str, cls: str) -> dict[str, Any]:
    """The literal field defaults of dataclass ``cls`` in ``pathweak.<module>``, read from the source without
    importing it (for dataclasses whose package imports torch: ``ssl.config``'s SSLConfig)."""
    tree = ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            out: dict[str, Any] = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    try:
                        out[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:
                        pass  # field(default_factory=...) and other non-literals
            return out
    raise KeyError(f"pathweak.{module} has no class {cls}")


@cache
def function_defaults(module: str, function: str) -> dict[str, Any]:
    """The literal keyword defaults of ``function`` in ``pathweak.<module>``, read from the source (for
    API functions whose module is slow to import at CLI start, e.g. ``cohort.demo.demo_settings``)."""
    tree = ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            args = node.args.posonlyargs + node.args.args
            pairs = list(zip(args[len(args) - len(node.args.defaults) :], node.args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is not None]
            return {a.arg: ast.literal_eval(d) for a, d in pairs}
    raise KeyError(f"pathweak.{module} has no function {function}")


def ssl_default(name: str) -> Any:
    """An SSLConfig field default (``pathweak pretrain`` / ``distill``)."""
    return source_defaults("ssl.config", "SSLConfig")[name]


def joined(values: Iterable[Any]) -> str:
    """A tuple default as the option's text form (``(0.5, 99.5)`` -> ``0.5,99.5``; ``(1.0,)*3`` -> ``1``)."""
    items = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return items[0] if len(set(items)) == 1 and len(items) == 3 else ",".join(items)


# ---- names from the registries --------------------------------------------------------------------------


@cache
def registered_names(package: str, call: str) -> tuple[str, ...]:
    """Names registered in ``pathweak.<package>``'s modules by ``@<call>("name")`` (a decorator such as
    ``register_head`` or ``ENCODERS.register``), read from the source."""
    names: set[str] = set()
    for path in sorted((PACKAGE / package.replace(".", "/")).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) == call
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return tuple(sorted(names))


def _heads() -> Sequence[str]:
    return registered_names("heads", "register_head")


def _encoders() -> Sequence[str]:
    presets = list(standalone("encoders.presets").PRESETS)
    families = [f"{n}:" for n in registered_names("encoders", "ENCODERS.register")]
    return [*presets, *families]


@cache
def source_keys(module: str, name: str) -> tuple[str, ...]:
    """The keys of the literal dict ``name`` in ``pathweak.<module>`` (``ARCHS``), read from the source."""
    tree = ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return tuple(ast.literal_eval(k) for k in node.value.keys if k is not None)
    raise KeyError(f"pathweak.{module} has no literal dict {name}")


@cache
def standalone(module: str) -> ModuleType:
    """``pathweak.<module>`` when it is imported, else the same file imported through a stand-in for its
    package that does not run the package's ``__init__`` (``encoders.presets`` imports only its siblings,
    but ``pathweak.encoders`` imports torch). Relative imports inside it resolve as usual."""
    name = f"pathweak.{module}"
    if name in sys.modules:
        return sys.modules[name]
    package, _, leaf = module.rpartition(".")
    if not package or "." in package:
        raise ValueError(f"standalone() takes a module of a first-level subpackage, got {module!r}")
    alias = f"pathweak._cli_{package}"
    if alias not in sys.modules:
        stand_in = ModuleType(alias)
        stand_in.__path__ = [str(PACKAGE / package)]
        stand_in.__package__ = alias
        sys.modules[alias] = stand_in
    return importlib.import_module(f"{alias}.{leaf}")


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
