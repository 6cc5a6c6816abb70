"""The project's import graph, read from the source (no import is executed): which of its own
modules each module of ``star``, ``rewards`` and ``pipelines`` imports, at load time or inside a
function. The layering and DVC-dependency tests read it."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("star", "rewards", "pipelines")


@cache
def project_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``PACKAGES`` (a package is its
    ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _resolve(name: str) -> str | None:
    """The longest project module that ``name`` (a module or ``module.attribute``) lies in."""
    modules = project_modules()
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for annotations, which never run."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not _type_checking_only(child))


def imported_names(path: Path) -> set[str]:
    """Every absolute dotted name the file imports when it runs: ``import a.b`` gives ``a.b``,
    ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule)."""
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import at line {node.lineno}; the project imports absolutely")
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports (itself excluded). Importing ``a.b.c`` also
    runs the packages ``a`` and ``a.b``, so they count as imported too."""
    graph: dict[str, frozenset[str]] = {}
    for module, path in project_modules().items():
        targets: set[str] = set()
        for name in imported_names(path):
            resolved = _resolve(name)
            while resolved:
                targets.add(resolved)
                resolved = _resolve(resolved.rpartition(".")[0]) if "." in resolved else None
        graph[module] = frozenset(targets - {module})
    return graph


def closure(*roots: str, opaque: frozenset[str] = frozenset()) -> set[str]:
    """``roots`` and every project module they import, directly or not; the imports of an
    ``opaque`` module are not followed (it is in the closure, what only it imports is not)."""
    graph, seen, todo = import_graph(), set(), list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if module not in opaque:
                todo.extend(graph[module])
    return seen
