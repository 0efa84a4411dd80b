"""Modules that moved keep working under their old import paths for one release: importing an old path
warns (DeprecationWarning naming the new path) and gives the new module itself. pathweak's own code, its
tests and benchmarks use the new paths only."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest
from conftest import imported_names

from pathweak._moved import MOVED

REPO = Path(__file__).resolve().parents[1]


def _forget(old: str) -> None:
    """Drop the old name from sys.modules and its package (the new module itself stays imported)."""
    sys.modules.pop(old, None)
    parent, _, leaf = old.rpartition(".")
    if parent in sys.modules and getattr(sys.modules[parent], leaf, None) is not None:
        delattr(sys.modules[parent], leaf)


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_warns_and_is_the_new_module(old: str, new: str) -> None:
    module = importlib.import_module(new)
    _forget(old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(f"import {old}", __file__, "exec"), {})  # as a user's `import` statement
    assert sys.modules[old] is module
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(old in m and new in m for m in messages), messages
    assert all(w.filename == __file__ for w in caught if "has moved" in str(w.message))  # points at the import statement
    # `from old import name` gives the same objects
    _forget(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        names = [n for n in vars(module) if not n.startswith("_")][:5]
        imported = __import__(old, fromlist=names)
    assert all(getattr(imported, n) is getattr(module, n) for n in names)


def test_the_new_paths_exist_and_the_old_ones_have_no_file() -> None:
    for old, new in MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        stem = REPO / old.replace(".", "/")
        assert not stem.with_suffix(".py").exists() and not (stem / "__init__.py").exists(), old


def _imported_modules(path: Path) -> set[str]:
    """What ``path`` imports (conftest.imported_names), and module paths it names in strings
    (``importlib.import_module("...")``, monkeypatch targets)."""
    tree = ast.parse(path.read_text())
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return imported_names(path) | (named & MOVED.keys())


def test_nothing_of_ours_imports_an_old_path() -> None:
    users = []
    for folder in ("pathweak", "pathweak_cli", "tests", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name in ("test_moved_paths.py", "_moved.py"):
                continue
            old = sorted(_imported_modules(path) & MOVED.keys())
            if old:
                users.append(f"{path.relative_to(REPO)}: {', '.join(old)}")
    assert not users, "imports of moved modules (use the new paths in pathweak._moved.MOVED):\n" + "\n".join(users)
