"""The package's import graph runs one way and has no cycle.

Layers, lowest first: algorithms <- parallel <- training <- experiments <- configs (the configs
shipped with the package, which nothing below imports). A module may import
its own layer and the layers below it, never one above; ``data/`` and ``models/`` are leaves
that import nothing from the rest of the package (any layer may import them). ``parallel/``
knows the algorithms' protocol (``algorithms.base``, and ``algorithms.clock``, the phase of
the shared clock that ``make_round`` declares), never a family module. No import cycle
between modules, not even through an import inside a function.

Every module under ``easgd_jax/`` is parsed with ``ast`` (imports at any depth, including
``importlib.import_module`` / ``__import__`` of a constant name). ``easgd_jax/__init__.py`` is
exempt, being the re-export surface; no module inside the package may import from it.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "easgd_jax"

# Layers, lowest first: module-name prefixes (a package, or a module, and everything in it).
LAYERS: dict[str, tuple[str, ...]] = {
    "algorithms": ("easgd_jax.algorithms",),
    "parallel": ("easgd_jax.parallel",),
    "training": ("easgd_jax.training",),
    "experiments": ("easgd_jax.experiments",),
    # The shipped configs: data (ConfigDicts built on training.config's schema), on top.
    "configs": ("easgd_jax.configs",),
}
RANK = {layer: rank for rank, layer in enumerate(LAYERS)}
LEAVES = ("easgd_jax.data", "easgd_jax.models")
EXEMPT = (PACKAGE,)  # easgd_jax/__init__.py, the public re-exports

# What parallel/ may import from algorithms/: the protocol, never a family.
PARALLEL_MAY_IMPORT = ("easgd_jax.algorithms.base", "easgd_jax.algorithms.clock")

# --------------------------------------------------------------------------- the reader


def find_modules(root: str, package: str = PACKAGE) -> dict[str, str]:
    """Module name -> file path for every ``.py`` file under ``root/package``."""
    modules = {}
    for directory, _, files in os.walk(os.path.join(root, package)):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(directory, file)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_package(module: str, modules: dict[str, str]) -> bool:
    return modules[module].endswith("__init__.py")


def _resolve(importer: str, node: ast.ImportFrom, modules: dict[str, str]) -> str | None:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module
    parts = importer.split(".")
    if not _is_package(importer, modules):
        parts = parts[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _target(name: str, modules: dict[str, str]) -> str | None:
    """The package module ``name`` loads (its longest prefix that is one), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, str]) -> dict[str, int]:
    """Package modules that ``module`` imports, anywhere in its body -> a line doing it."""
    with open(modules[module]) as f:
        tree = ast.parse(f.read(), modules[module])
    found: dict[str, int] = {}

    def add(name: str | None, line: int) -> None:
        target = _target(name, modules) if name else None
        if target is not None and target != module:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, modules)
            for alias in node.names:  # a submodule if there is one, else the module itself
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base,
                    node.lineno)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            argument = node.args[0] if node.args else None
            if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
                raise AssertionError(f"{modules[module]}:{node.lineno}: an import by a computed "
                                     "name, which this test cannot follow.")
            add(argument.value, node.lineno)
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def import_graph(root: str, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    modules = find_modules(root, package)
    return {module: imports_of(module, modules) for module in sorted(modules)}


def _within(module: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def layer_of(module: str) -> str | None:
    """The layer of ``module``, ``"leaf"`` for data/ and models/, None if unmapped."""
    if _within(module, LEAVES):
        return "leaf"
    for layer, prefixes in LAYERS.items():
        if _within(module, prefixes):
            return layer
    return None


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import that goes up a layer, leaves a leaf, or reaches into the exempt
    re-export surface; and every module the layer map does not know."""
    problems = []
    for module, imported in graph.items():
        if module in EXEMPT:
            continue
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module}: in no layer; add it to LAYERS (or LEAVES) in "
                            "tests/unit/test_layers.py")
            continue
        for target, line in imported.items():
            where = f"{module} (line {line}) imports {target}"
            target_layer = layer_of(target)
            if target in EXEMPT:
                problems.append(f"{where}: import from the defining module, not the package's "
                                "re-exports")
            elif layer == "leaf":
                if _within(target, LEAVES) != _within(module, LEAVES):
                    problems.append(f"{where}: data/ and models/ import nothing from the rest")
            elif target_layer in (None, "leaf"):
                continue
            elif RANK[target_layer] > RANK[layer]:
                problems.append(f"{where}: {layer} must not import {target_layer} (up a layer)")
            elif (layer == "parallel" and target_layer == "algorithms"
                  and target not in PARALLEL_MAY_IMPORT):
                problems.append(f"{where}: parallel/ imports only "
                                f"{', '.join(PARALLEL_MAY_IMPORT)} from algorithms/")
    return problems


def cycles(graph: dict[str, dict[str, int]],
           ignored: frozenset[tuple[str, str]] = frozenset()) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), without the
    ``ignored`` edges and the exempt modules."""
    edges = {m: sorted(t for t in targets if t in graph and t not in EXEMPT
                       and (m, t) not in ignored)
             for m, targets in graph.items() if m not in EXEMPT}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


# --------------------------------------------------------------------------- the package


GRAPH = import_graph(ROOT)


def test_every_module_is_read():
    assert "easgd_jax.algorithms.base" in GRAPH and "easgd_jax.parallel.worker_loop" in GRAPH
    assert all(layer_of(m) is not None for m in GRAPH if m not in EXEMPT)


def test_layers_import_one_way():
    problems = layer_violations(GRAPH)
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# --------------------------------------------------------------------------- the checker


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def fake_package(tmp_path):
    _write(tmp_path, {
        "easgd_jax/__init__.py": "from easgd_jax.algorithms import elastic\n",
        "easgd_jax/algorithms/__init__.py": "",
        "easgd_jax/algorithms/base.py": "",
        "easgd_jax/algorithms/elastic.py": "from easgd_jax.algorithms import base\n",
        "easgd_jax/parallel/__init__.py": "",
        "easgd_jax/parallel/spmd.py": "from easgd_jax.algorithms.base import X\n",
        "easgd_jax/training/sync.py": "from easgd_jax import parallel\n",
        "easgd_jax/data/__init__.py": "",
    })
    return tmp_path


def test_checker_passes_a_clean_tree(fake_package):
    graph = import_graph(str(fake_package))
    assert graph["easgd_jax.parallel.spmd"] == {"easgd_jax.algorithms.base": 1}
    assert not layer_violations(graph) and not cycles(graph)


@pytest.mark.parametrize("module, text, message", [
    # an upward import inside a function, found and named
    ("easgd_jax/algorithms/elastic.py", "def f():\n    from easgd_jax.parallel import spmd\n",
     "algorithms must not import parallel"),
    ("easgd_jax/algorithms/elastic.py", "import easgd_jax.training.sync\n",
     "algorithms must not import training"),
    ("easgd_jax/parallel/spmd.py", "from easgd_jax.algorithms import elastic\n",
     "parallel/ imports only"),
    ("easgd_jax/parallel/spmd.py", "from . import mesh\nfrom ..algorithms import elastic\n",
     "parallel/ imports only"),
    ("easgd_jax/data/__init__.py", "from easgd_jax.algorithms import base\n",
     "import nothing from the rest"),
    ("easgd_jax/algorithms/elastic.py", "from easgd_jax import Spec\n", "re-exports"),
    ("easgd_jax/elsewhere.py", "", "in no layer"),
    ("easgd_jax/algorithms/elastic.py",
     "import importlib\nimportlib.import_module('easgd_jax.parallel.spmd')\n",
     "algorithms must not import parallel"),
])
def test_checker_catches_an_upward_import(fake_package, module, text, message):
    _write(fake_package, {module: text, "easgd_jax/parallel/mesh.py": ""})
    problems = layer_violations(import_graph(str(fake_package)))
    assert any(message in p for p in problems), problems


def test_checker_catches_a_cycle_even_through_a_function(fake_package):
    _write(fake_package, {
        "easgd_jax/algorithms/base.py": "def f():\n    from easgd_jax.algorithms import elastic\n"})
    graph = import_graph(str(fake_package))
    assert cycles(graph) == [["easgd_jax.algorithms.base", "easgd_jax.algorithms.elastic"]]
    edge = ("easgd_jax.algorithms.base", "easgd_jax.algorithms.elastic")
    assert not cycles(graph, ignored=frozenset({edge}))


def test_checker_refuses_an_import_by_a_computed_name(fake_package):
    _write(fake_package, {"easgd_jax/algorithms/elastic.py":
                          "import importlib\nname = 'x'\nimportlib.import_module(name)\n"})
    with pytest.raises(AssertionError, match="computed name"):
        import_graph(str(fake_package))
