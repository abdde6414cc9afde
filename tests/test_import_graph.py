"""The import graph of ``harness/`` has no cycle.

Every module under ``harness/`` is parsed with ``ast`` (nothing is imported). An edge
``a -> b`` is an ``import`` or ``from ... import`` statement of module ``a`` that names
module ``b`` of ``harness``, outside function bodies: at module level, including inside
``if TYPE_CHECKING:`` blocks (a type-only import is still a dependency between the two
modules). Imports inside functions are deferred until the call, after every module has
been imported, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "harness"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``pkg/__init__.py`` is ``pkg``)."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _module_level(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements outside function bodies (classes and ``if`` blocks included)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package-internal modules that module ``name`` (file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative import: strip (level - 1) trailing parts of the package
            parents = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parents, base] if base else parents)
        for alias in node.names:
            # `from harness.models import sources` imports the module harness.models.sources
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_harness_import_graph_is_acyclic() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the walk found too few modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_markers_module_is_a_leaf() -> None:
    assert import_graph()["harness.markers"] == set()


def test_only_the_plugin_manager_imports_the_hookspecs() -> None:
    """Implementations take ``hookimpl`` from ``harness.markers``, not from the specs."""
    graph = import_graph()
    importers = {name for name, deps in graph.items() if "harness.hookspecs" in deps}
    assert importers == {"harness.plugins"}


# ---------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_type_checking_import_closes_a_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/a.py": "from harness.b import B\n",
            "harness/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.a import A\n"
            ),
        },
    )
    assert find_cycle(import_graph(tmp_path)) == ["harness.a", "harness.b", "harness.a"]


@pytest.mark.parametrize(
    ("statement", "target"),
    [
        ("import harness.pkg.leaf", "harness.pkg.leaf"),
        ("from harness.pkg import leaf", "harness.pkg.leaf"),
        ("from harness.pkg.leaf import thing", "harness.pkg.leaf"),
        ("from harness.pkg import thing", "harness.pkg"),
        ("from . import leaf", "harness.pkg.leaf"),
        ("from .leaf import thing", "harness.pkg.leaf"),
        ("from .. import top", "harness.top"),
    ],
)
def test_import_forms_resolve_to_modules(tmp_path: Path, statement: str, target: str) -> None:
    _write(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/top.py": "",
            "harness/pkg/__init__.py": "",
            "harness/pkg/leaf.py": "",
            "harness/pkg/user.py": f"{statement}\n",
        },
    )
    assert import_graph(tmp_path)["harness.pkg.user"] == {target}


def test_imports_inside_functions_are_deferred(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/a.py": "from harness.b import B\n",
            "harness/b.py": "def late():\n    from harness.a import A\n",
        },
    )
    assert find_cycle(import_graph(tmp_path)) is None
