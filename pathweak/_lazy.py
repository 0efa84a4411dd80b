"""Package exports imported on first use (PEP 562): the one import policy of every pathweak package.

A package's ``__init__`` names what it exports and the module each name comes from, and imports none of
them: ``__getattr__ = lazy_getattr(__name__, {"TileStore": "..store.tiles", "tile_grid": "grid"})``.
A module is given relative to the package (a bare name is one of its own submodules), so a package may
re-export a name from a lower floor; tests/test_import_graph.py reads these tables as imports. Only
what is light (no torch, timm, lightning or monai) may be imported at a package's top level.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module relative to
    ``package``; a bare name is a submodule) the first time ``name`` is asked for, and keeps the value in
    the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module if module.startswith(".") else f".{module}", package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
