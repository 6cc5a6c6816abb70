"""Every module a DVC stage runs is one of its deps: each stage's import closure over ``star``,
``rewards`` and ``pipelines`` (lazy imports inside functions included) must be covered by a
listed file or folder, so that editing any of them makes ``dvc status`` report the stage."""

from __future__ import annotations

import shlex

import pytest
import yaml

from tests.import_graph import REPO, closure, project_modules
from tests.test_layering import docstring_only

EXEMPT = {
    "pipelines": "sets Prefect's environment variables",
    "pipelines.__main__": "dispatches to the stage",
    "pipelines.cli": "parses the command line and runs pre-flight checks",
    "pipelines.failures": "turns exceptions into exit codes and messages",
    "pipelines.tracking": "logs to MLflow",
}
"""Modules that only orchestrate, check or log: they change no output of a stage, and neither does
what only they import (the pre-flight's checks); what the stage's own module imports counts."""

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_modules(cmd: str) -> set[str]:
    """The project modules ``python -m pipelines <stage> ...`` imports."""
    args = shlex.split(cmd)
    assert args[:3] == ["python", "-m", "pipelines"], f"unexpected stage command {cmd!r}"
    return closure("pipelines.__main__", f"pipelines.{args[3]}", opaque=frozenset(EXEMPT))


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_stage_depends_on_every_module_it_imports(name: str) -> None:
    stage = STAGES[name]
    deps = [dep for dep in stage["deps"] if "${" not in dep]
    missing = sorted(
        str(project_modules()[module].relative_to(REPO))
        for module in stage_modules(stage["cmd"])
        if module not in EXEMPT and not docstring_only(module)
        and not covered(str(project_modules()[module].relative_to(REPO)), deps)
    )
    assert not missing, f"dvc.yaml stage {name!r} imports modules missing from its deps: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_code_dep_exists(name: str) -> None:
    for dep in STAGES[name]["deps"]:
        if dep.startswith(("star", "rewards", "pipelines")):
            assert (REPO / dep).exists(), f"dvc.yaml stage {name!r} lists {dep}, which does not exist"


def test_the_exempt_modules_exist() -> None:
    assert set(EXEMPT) <= set(project_modules())
