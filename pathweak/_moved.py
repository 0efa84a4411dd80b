"""Old import paths of modules that moved, kept working for one release with a DeprecationWarning.

``MOVED`` maps each old module path to its new one. Importing an old path (``import
pathweak.tiling.store``, ``from pathweak.tiling.store import TileStore``) warns once and gives the new
module itself, so every class and function is the same object under both names. pathweak's own code and
tests import the new paths; only code written against an earlier release meets the old ones.
``pathweak/__init__.py`` installs the finder, so any ``pathweak.*`` import can resolve an old path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

REMOVED_IN = "0.3"

#: old module path -> new module path (issue 28, "the house": every package imports only downward)
MOVED: dict[str, str] = {
    "pathweak.volumes.detect": "pathweak.io.detect",
    "pathweak.tiling.inputs": "pathweak.io.inputs",
    "pathweak.tiling.codecs": "pathweak.store.codecs",
    "pathweak.tiling.shards": "pathweak.store.shards",
    "pathweak.tiling.store": "pathweak.store.tiles",
    "pathweak.tiling.result": "pathweak.store.tile_result",
    "pathweak.features.store": "pathweak.store.features",
    "pathweak.heatmap.results": "pathweak.store.results",
    "pathweak.tilers": "pathweak.tiling.run",
    "pathweak.tiling.tiler": "pathweak.tiling.slides",
    "pathweak.cohort.encoders_cache": "pathweak.encoders.cache",
    "pathweak.ssl.vit3d": "pathweak.encoders.vit3d",
    "pathweak.train.ddp": "pathweak.ddp",
    "pathweak.encoders.preset": "pathweak.encoders.presets.record",
    "pathweak.encoders.preset_list": "pathweak.encoders.presets.catalog",
    "pathweak.cohort.report": "pathweak.cohort.outcome",
    "pathweak.cohort.locks": "pathweak.store.locks",
}


class _MovedLoader(importlib.abc.Loader):
    """Loads an old path by importing the new module and putting it in the old name's place."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # a placeholder module; exec_module replaces it with the new one

    def exec_module(self, module: ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} has moved to {self.new}; import it from there (the old path is removed in "
            f"pathweak {REMOVED_IN})",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[module.__name__] = importlib.import_module(self.new)


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths in :data:`MOVED` (and nothing else)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader(new))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): an old path has no file, and an editable
    install's finder must not find it in another checkout."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
