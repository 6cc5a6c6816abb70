"""The README's terminal views of a study fit a 120-column terminal: its `dvc exp show` and
`dvc metrics show` recipes rendered on a project with the default study's variants and a sweep's
experiment."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pipelines.sweep import experiment_name
from star.config import DEFAULT_STUDY, load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # git, dvc init and an experiment: seconds

WIDTH = 120


def readme_commands(prefix: str) -> list[str]:
    """The README's shell lines that start with ``prefix`` (its code blocks' recipes)."""
    return [line.strip() for line in (REPO / "README.md").read_text().splitlines() if line.startswith(prefix)]


def _run(command: list[str], cwd: Path) -> str:
    env = os.environ | {"COLUMNS": "1000", "DVC_NO_ANALYTICS": "1"}  # rendered at its natural width
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _summary(variants: list[str], shift: float) -> dict[str, dict[str, float]]:
    return {"geneval": {name: round(0.2345 + shift + 0.0111 * i, 4) for i, name in enumerate(["base", *variants])}}


def test_the_readme_recipes_fit_120_columns(tmp_path: Path) -> None:
    cfg = load_config(REPO / "params.yaml")
    variants = list(cfg.studies[DEFAULT_STUDY].variants)
    study = tmp_path / "metrics" / "study.json"
    study.parent.mkdir()
    study.write_text(json.dumps(_summary(variants, 0.0)))
    (tmp_path / "dvc.yaml").write_text("stages:\n  report:\n    cmd: python -c pass\n    metrics:\n"
                                       "      - metrics/study.json:\n          cache: false\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "study"]):
        _run(command, tmp_path)
    study.write_text(json.dumps(_summary(variants, 0.05)))  # a sweep's experiment with its longest name
    name = experiment_name("geneval", list(cfg.study.seeds))
    _run(["dvc", "exp", "save", "-n", name], tmp_path)
    (exp_show,) = readme_commands("dvc exp show")
    (metrics_show,) = readme_commands("dvc metrics show metrics/study.json")
    for recipe in (exp_show, metrics_show):
        out = _run(shlex.split(recipe), tmp_path)
        lines = [line.rstrip() for line in out.splitlines() if line.strip()]
        assert max(len(line) for line in lines) <= WIDTH, f"{recipe}\n{out}"
        assert "…" not in out  # nothing was cut to fit
        shown = variants if recipe == exp_show else ["base", *variants]
        for variant in shown:
            assert re.search(rf"geneval\.{re.escape(variant)}\b", out), (variant, out)
    out = _run(shlex.split(exp_show), tmp_path)
    assert name in out and "0.2956" in out, out  # the experiment's row, its first variant's score
