"""The import graph, read from the source with ``ast`` (every ``import`` of a pathweak module, at module
level or inside a function, and the names a package exports lazily: they all tie two modules together):

- no module imports another that imports it back;
- the packages form a DAG, and each imports only packages on lower floors (FLOORS, the table of
  docs/architecture.md "Layout by floors"; ground-floor modules may import one another);
- the module-level never-rules of docs/architecture.md hold: configs, registries, package ``__init__``
  files and the CLI import no model library at module level (so ``pathweak --help`` starts without
  torch), heads do no I/O, and a package's lazy export table is exactly what it declares.

Imports under ``if TYPE_CHECKING:`` are left out. A planted cycle is found (the last tests).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import resolve_import

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pathweak", "pathweak_cli")

# Cycles between modules known and owned by a planned change (none today: keep it that way).
KNOWN: set[frozenset[str]] = set()

# The floors of docs/architecture.md: a package (a subpackage or a top-level module of pathweak) imports
# only packages on lower floors. Ground-floor modules may import one another (the graph stays a DAG).
FLOORS: dict[str, int] = {
    **dict.fromkeys(
        ["errors", "config", "_registry", "_lazy", "_moved", "_provenance", "_atomic", "progress", "cpus"]
        + ["devices", "ddp", "protocols", "_lightning", "synthetic", "store", "io", "hub", "_version", "stain"],
        0,
    ),
    "tissue": 1,
    "resolution": 1,
    "volumes": 2,
    "tiling": 3,
    "encoders": 3,
    "heads": 3,
    "ssl": 4,
    "features": 4,
    "pseudoslides": 4,
    "train": 5,
    "heatmap": 6,
    "report": 7,
    "cohort": 8,
    "pathweak": 9,  # pathweak/__init__.py: the public API, lazily
    "pathweak_cli": 10,
}
MODEL_LIBRARIES = {"torch", "torchvision", "timm", "lightning", "monai", "transformers", "torchsurv"}
IO_LIBRARIES = {"zarr", "h5py", "tifffile", "openslide", "tiffslide", "imagecodecs", "simplejpeg", "cv2", "PIL"}
IO_LIBRARIES |= {"nibabel", "SimpleITK", "pandas", "json", "csv", "pickle", "shutil", "glob", "os", "pathlib"}
# configs and registries that are not found by their shape (a module-level Registry or *Spec/*Config dataclass)
CONFIGS = {"pathweak.encoders.archs", "pathweak.encoders.presets", "pathweak.heatmap.options", "pathweak.train.config"}


def _modules(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    mods = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _package(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """The module-level ``_EXPORTS = {name: module}`` table of a package using pathweak._lazy."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def _imports(path: Path, module: str, mods: dict[str, Path], module_level: bool = False) -> tuple[set[str], set[str]]:
    """(pathweak modules, top-level names of other libraries) that ``path`` imports: anywhere, or only at
    module level (``module_level``: not inside a function, as importing the module runs it). ``from . import
    sub`` names the submodule; a lazy export table counts as imports of its modules."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    if module_level:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                skip.update(id(n) for n in ast.walk(node))
    package = _package(path, module)
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                (ours if a.name.split(".")[0] in PACKAGES else others).add(a.name if a.name in mods else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            target = resolve_import(package, node.level, node.module)
            if target.split(".")[0] not in PACKAGES and not node.level:
                others.add(target.split(".")[0])
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & mods.keys()
            ours.update(subs or ({target} & mods.keys()))
    for target in () if module_level else _lazy_exports(tree).values():  # a table imports nothing at import time
        rel = target if target.startswith(".") else f".{target}"
        dots = len(rel) - len(rel.lstrip("."))
        ours.update({resolve_import(package, dots, rel.lstrip("."))} & mods.keys())
    ours.discard(module)
    return ours & mods.keys(), others - {"__future__"}


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    return {m: _imports(p, m, mods)[0] for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


def _package_of(module: str) -> str:
    """``pathweak.tiling.plan`` -> ``tiling``; top-level modules are their own package; the roofs keep their name."""
    parts = module.split(".")
    return parts[0] if parts[0] != "pathweak" or len(parts) == 1 else parts[1]


def _package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(package, package) -> the module imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for m, targets in graph.items():
        for t in targets:
            a, b = _package_of(m), _package_of(t)
            if a != b:
                edges.setdefault((a, b), []).append(f"{m} -> {t}")
    return edges


def package_problems(root: Path = REPO, packages: tuple[str, ...] = PACKAGES, floors: dict[str, int] = FLOORS) -> list[str]:
    """What breaks the house: a cycle between packages, a package without a floor, an import of a package
    on the same or a higher floor (ground-floor modules excepted among themselves)."""
    edges = _package_edges(_graph(_modules(root, packages)))
    pkg_graph: dict[str, set[str]] = {}
    for a, b in edges:
        pkg_graph.setdefault(a, set()).add(b)
        pkg_graph.setdefault(b, set())
    out = [f"cycle between packages {sorted(c)}: " + "; ".join(
        e for (a, b), es in sorted(edges.items()) if a in c and b in c for e in es) for c in _cycles(pkg_graph)]  # fmt: skip
    for pkg in sorted(pkg_graph):
        if pkg not in floors:
            out.append(f"package {pkg} has no floor: add it to FLOORS and docs/architecture.md")
    for (a, b), es in sorted(edges.items()):
        if a in floors and b in floors and floors[b] >= floors[a] and not floors[a] == floors[b] == 0:
            out.append(f"{a} (floor {floors[a]}) imports {b} (floor {floors[b]}): {'; '.join(es)}")
    return out


def test_no_import_cycles() -> None:
    new = [sorted(c) for c in _cycles(_graph(_modules())) if c not in KNOWN]
    assert not new, f"import cycles: {new}; break each by moving the shared piece into a module both can import"


def test_packages_form_a_dag_and_import_only_downward() -> None:
    problems = package_problems()
    assert not problems, "\n".join(problems)


def test_the_floors_are_the_documented_ones() -> None:
    """docs/architecture.md lists every package on the floor FLOORS gives it."""
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text[text.index("## Layout by floors") :]
    table = table[: table.index("\n## ", 5)]
    documented: dict[str, int] = {}
    for floor, rest in re.findall(r"^floor (\d+)[^:]*:(.*)$", table, re.M):
        for name in re.findall(r"`([\w/.]+)`", rest):
            documented[name.strip("/").removesuffix(".py").removeprefix("pathweak/")] = int(floor)
    assert documented == FLOORS


# ---- module-level never-rules -------------------------------------------------------------------------


def _loaded_at_import(module: str, mods: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The pathweak modules and other libraries importing ``module`` runs, following module-level imports
    (and the ``__init__`` of every package on the way)."""
    seen: set[str] = set()
    libraries: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b, a.b.c
            name = ".".join(parts[:i])
            if name in mods and name not in seen:
                seen.add(name)
                ours, others = _imports(mods[name], name, mods, module_level=True)
                libraries |= others
                todo.extend(ours)
    return seen, libraries


def _configs_and_registries(mods: dict[str, Path]) -> set[str]:
    """Modules holding a module-level Registry or a *Spec / *Config / *Options dataclass, and CONFIGS."""
    found = set(CONFIGS)
    for m, path in mods.items():
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Call) and ast.unparse(value.func) == "Registry":
                found.add(m)
            if isinstance(node, ast.ClassDef) and re.search(r"(Spec|Config|Options)$", node.name) and any(
                "dataclass" in ast.unparse(d) for d in node.decorator_list
            ):
                found.add(m)
    return found & mods.keys()


def test_configs_registries_inits_and_the_cli_import_no_model_library_at_module_level() -> None:
    mods = _modules()
    light = _configs_and_registries(mods)
    light |= {m for m, p in mods.items() if p.name == "__init__.py"}
    light |= {m for m in mods if m.startswith("pathweak_cli")}
    assert {"pathweak.config", "pathweak.ssl.config", "pathweak.heads.registry", "pathweak.encoders.families"} <= light
    heavy = {}
    for m in sorted(light):
        _, libraries = _loaded_at_import(m, mods)
        if libraries & MODEL_LIBRARIES:
            heavy[m] = sorted(libraries & MODEL_LIBRARIES)
    assert not heavy, f"import a model library at module level (import it inside the function that uses it): {heavy}"


def test_importing_them_loads_no_model_library() -> None:
    """The same, as Python runs it (a library may import torch itself)."""
    mods = _modules()
    light = sorted(_configs_and_registries(mods) | {m for m, p in mods.items() if p.name == "__init__.py"})
    code = (
        f"import importlib, sys\nfor m in {light + ['pathweak_cli.main']!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in {sorted(MODEL_LIBRARIES)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


def test_heads_do_no_io() -> None:
    """heads/ are pure torch modules: no pathweak I/O (io, store, atomic writes) and no file or image library,
    at any level."""
    mods = _modules()
    bad = {}
    for m, path in mods.items():
        if m.startswith("pathweak.heads"):
            ours, others = _imports(path, m, mods)
            io = {t for t in ours if _package_of(t) in ("io", "store", "_atomic")} | (others & IO_LIBRARIES)
            if io:
                bad[m] = sorted(io)
    assert not bad, bad


def test_lazy_export_tables_are_what_the_packages_declare() -> None:
    """A package's ``_EXPORTS`` names exactly what it imports under TYPE_CHECKING (for type checkers), each
    from the module the table gives, and ``__all__`` lists them."""
    import importlib

    for m, path in _modules().items():
        tree = ast.parse(path.read_text())
        exports = _lazy_exports(tree)
        if not exports:
            continue
        declared: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and id(node) in _type_checking_nodes(tree):
                for a in node.names:
                    declared[a.asname or a.name] = "." * node.level + (node.module or "")
        table = {k: v if v.startswith(".") else f".{v}" for k, v in exports.items()}
        assert {k: declared.get(k) for k in table} == table, m
        module = importlib.import_module(m)
        assert set(exports) <= set(module.__all__), m
        for name in exports:  # each resolves
            assert getattr(module, name) is not None, (m, name)


# ---- the checks find what they are for -----------------------------------------------------------------


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_a_planted_cycle_through_a_lazy_import_fails(tmp_path: Path) -> None:
    """A package tree where ``low`` imports ``high`` inside a function (and ``high`` imports ``low``): the
    check names the cycle and the upward import; without the planted import it passes."""
    root = tmp_path / "pathweak"
    for pkg, text in {
        "low": "def f():\n    return 1\n",
        "high": "from ..low import f\n",
        "top": "from .._lazy import lazy_getattr\n_EXPORTS = {'g': '..high'}\n",
    }.items():
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text(text)
    (root / "__init__.py").write_text("")
    (root / "_lazy.py").write_text("")
    floors = {"low": 1, "high": 2, "top": 3, "_lazy": 0, "pathweak": 4}
    assert package_problems(tmp_path, ("pathweak",), floors) == []
    (root / "low" / "__init__.py").write_text("def f():\n    from ..high import g\n    return g\n")
    problems = package_problems(tmp_path, ("pathweak",), floors)
    assert any(p.startswith("cycle between packages ['high', 'low']") for p in problems), problems
    assert any(p.startswith("low (floor 1) imports high (floor 2)") for p in problems), problems


def test_an_export_named_like_its_module_stays_the_export() -> None:
    """``heatmap.export`` (the function, from heatmap/export.py) is the function even after another module
    imported ``pathweak.heatmap.export`` directly, as an eager ``from .export import export`` leaves it."""
    code = (
        "import pathweak.heatmap.export, pathweak.heatmap.stitch, pathweak.ssl.distill, pathweak.ssl.rankme\n"
        "from pathweak.heatmap import export, stitch\nfrom pathweak.ssl import distill, rankme\n"
        "print([callable(f) and not isinstance(f, type(pathweak)) for f in (export, stitch, distill, rankme)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[True, True, True, True]", out.stderr
