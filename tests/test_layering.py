"""The package layering of docs/architecture.md, checked on the source: no import cycle, each
package imports only the layers below it, ``rewards`` imports nothing of ``star``, and nothing
in ``star`` or ``rewards`` imports Prefect, DVC or MLflow."""

from __future__ import annotations

import ast
import graphlib
from functools import cache

import pytest

from tests.import_graph import import_graph, imported_names, project_modules

WORLD_SCENES = {f"star.world.{name}" for name in ("config", "vocab", "render", "prompts", "detector")}
"""The procedural world itself (the config reads its defaults); its training modules sit on top."""

LAYERS: list[set[str]] = [
    {"rewards"},
    {"star.sections", "star.files"},
    {"star.world:scenes"},
    {"star.config"},
    {"star.models", "star.data", "star.scoring"},
    {"star.method"},
    {"star.sampling"},
    {"star.evaluation"},
    {"star.rl"},
    {"star.diagnostics", "star.world:training"},
    {"pipelines"},
]
"""Bottom to top: a module may import its own group and the groups of lower layers only."""

ORCHESTRATION = ("prefect", "dvc", "mlflow")


def group(module: str) -> str:
    """The layering group of a module: its package under ``star`` (the world split in two)."""
    if module in WORLD_SCENES:
        return "star.world:scenes"
    if module.startswith("star.world."):
        return "star.world:training"
    parts = module.split(".")
    return parts[0] if parts[0] != "star" else ".".join(parts[:2])


@cache  # asked once per import edge: each file is parsed once
def docstring_only(module: str) -> bool:
    """A package ``__init__`` that holds nothing but its docstring (importing it runs no code)."""
    body = ast.parse(project_modules()[module].read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def layer(module: str) -> int:
    name = group(module)
    return next(i for i, members in enumerate(LAYERS) if name in members)


def test_there_is_no_import_cycle() -> None:
    graphlib.TopologicalSorter(import_graph()).prepare()  # raises CycleError naming the cycle


def test_every_module_belongs_to_a_layer() -> None:
    for module in project_modules():
        if not docstring_only(module):
            layer(module)


@pytest.mark.parametrize("module", sorted(project_modules()))
def test_a_module_imports_only_its_group_and_lower_layers(module: str) -> None:
    if docstring_only(module):
        return
    upward = sorted(
        target for target in import_graph()[module]
        if not docstring_only(target) and group(target) != group(module) and layer(target) >= layer(module)
    )
    assert not upward, f"{module} ({group(module)}) imports {upward}: a layer above it or beside it"


def test_rewards_import_nothing_of_star() -> None:
    for module in project_modules():
        if module.startswith("rewards"):
            leaks = sorted(t for t in import_graph()[module] if not t.startswith("rewards"))
            assert not leaks, f"{module} imports {leaks}"


def test_star_and_rewards_import_no_orchestration() -> None:
    for module, path in project_modules().items():
        if module.startswith(("star", "rewards")):
            found = {name.split(".")[0] for name in imported_names(path)} & set(ORCHESTRATION)
            assert not found, f"{module} imports {sorted(found)}: orchestration and tracking live in pipelines/"
