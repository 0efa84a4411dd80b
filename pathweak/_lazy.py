"""Package exports imported on first use (PEP 562): the one import policy of every pathweak package.

A package's ``__init__`` names what it exports and the module each name comes from, and imports none of
them: ``__getattr__ = lazy_getattr(__name__, {"TileStore": "..store.tiles", "tile_grid": "grid"})``.
A module is given relative to the package (a bare name is one of its own submodules), so a package may
re-export a name from a lower floor; tests/test_import_graph.py reads these tables as imports. Only
what is light (no torch, timm, lightning or monai) may be imported at a package's top level.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _Package(types.ModuleType):
    """A package using :func:`lazy_getattr`. Importing a submodule binds it on the package under its own
    name; where the package exports a name of that submodule with the same name (``heatmap.export`` the
    function, from the module ``heatmap/export.py``), the name is bound instead, as an eager
    ``from .export import export`` would leave it."""

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("__lazy_exports__", {})
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
            and exports.get(name, "").lstrip(".") == name
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module relative to
    ``package``; a bare name is a submodule) the first time ``name`` is asked for, and keeps the value in
    the package's namespace."""
    module_of_package = sys.modules[package]
    module_of_package.__lazy_exports__ = exports  # type: ignore[attr-defined]
    module_of_package.__class__ = _Package

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module if module.startswith(".") else f".{module}", package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
