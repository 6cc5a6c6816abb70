"""Shared fixtures: the micro configuration, one Prefect test server per session, and the micro
project's prompts and base model, built once per test run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import pipelines  # noqa: F401  (Prefect settings before Prefect is imported)

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, set before torch loads
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "configs" / "micro.yaml"
DEFAULT_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


STAGE_FIXTURES = {"prefect_server"}
"""A test that needs Prefect's server runs stages or flows (tens of seconds to minutes): ``slow``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs a stage ``slow``, so ``pytest -m "not slow"`` is the fast subset
    (the unit tests of the math, the config, the rewards and the world); the rest is marked by hand."""
    for item in items:
        if STAGE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def bench() -> Path:
    """The public benchmark prompt sets (``STAR_BENCHMARKS_DIR`` overrides ../shared/benchmarks)."""
    root = Path(os.environ.get("STAR_BENCHMARKS_DIR", DEFAULT_BENCHMARKS))
    if not root.is_dir():
        pytest.skip(f"public benchmark prompt sets not found: {root}")
    return root


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's ephemeral test server, started once (15–35 s here) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server) -> str:
    """The session server's API URL, for stage subprocesses: with ``PREFECT_API_URL`` set a stage
    skips its own temporary server (8–10 s each on 2 cores), as under ``scripts/repro.sh``."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def micro_overrides(root: Path) -> dict[str, Any]:
    """Point every output of the micro config inside ``root``."""
    return {
        "paths": {
            "prompts": str(root / "data" / "prompts"),
            "base_model": str(root / "models" / "base"),
            "work": str(root / "outputs"),
            "metrics": str(root / "metrics"),
            "reward_models": str(root / "models" / "rewards"),
            "checkpoints": str(root / "models" / "checkpoints"),
            "reports": str(root / "reports"),
            "eval_samples": str(root / "eval"),
        },
        "tracking": {"uri": f"sqlite:///{root / 'mlruns.db'}", "artifacts": str(root / "mlartifacts")},
    }


@pytest.fixture(scope="session")
def micro_base(prefect_server, tmp_path_factory) -> tuple[Path, dict[str, int], dict[str, float]]:
    """``prepare``, ``base`` and ``reward_models`` on the micro config, once per test run: (root,
    prompt counts, base metrics). Read-only: a test that writes into a project takes ``micro_run``."""
    from pipelines.base import base
    from pipelines.prepare import prepare
    from pipelines.reward_models import reward_models

    root = tmp_path_factory.mktemp("micro-base")
    overrides = micro_overrides(root)
    counts = prepare(params=str(MICRO), overrides=overrides)
    metrics = base(params=str(MICRO), overrides=overrides)
    reward_models(params=str(MICRO), overrides=overrides)  # the PickScore stand-in the micro study trains on
    return root, counts, metrics


@pytest.fixture(scope="module")
def micro_run(micro_base, tmp_path_factory) -> tuple[Path, dict[str, int], dict[str, float]]:
    """A writable micro project for one test module: the shared prompts, base and reward models
    copied into a fresh root (its own MLflow store, checkpoints and metrics)."""
    source, counts, metrics = micro_base
    root = tmp_path_factory.mktemp("micro")
    for part in ("data/prompts", "models/base", "models/rewards"):
        shutil.copytree(source / part, root / part)
    (root / "metrics").mkdir()
    shutil.copy(source / "metrics" / "base.json", root / "metrics" / "base.json")
    return root, counts, metrics


def micro_pipeline(seed: int = 0) -> Any:
    """A fresh, untrained miniature SD3 of the micro config (trainers mutate it: build one per use)."""
    from star.config import load_config
    from star.models.sd3 import build_mini_sd3
    from star.world.prompts import vocabulary
    from star.world.vocab import TEXT_CHARSET

    cfg = load_config(MICRO)
    return build_mini_sd3(cfg.model.mini, vocabulary(), TEXT_CHARSET, cfg.world.image_size, seed=seed)


class BrightnessReward:
    """A cheap reward with spread on untrained models (mean pixel value), for trainer mechanics;
    the real rewards have their own tests."""

    name = "brightness"

    def score(self, images: Any, prompts: list[str], metadata: list[dict[str, Any]]) -> Any:
        return images.mean(dim=(1, 2, 3))


GENEVAL_RECORDS = [
    {"prompt": "a photo of a red star", "tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}]},
    {"prompt": "a photo of two circles", "tag": "counting", "include": [{"class": "circle", "count": 2}]},
]


def straight_and_resumed(make_trainer: Any, root: Path) -> tuple[Any, Any, Any]:
    """Train once straight through, and once interrupted after iteration 2 and resumed from its
    checkpoint: (straight, interrupted, resumed) trainers; ``make_trainer(work_dir)`` builds one."""
    import pytest

    straight = make_trainer(root / "straight")
    straight.train()

    class Interrupt(Exception):
        pass

    def stop_after_two(metrics: dict, step: int) -> None:
        if step == 2:
            raise Interrupt

    interrupted = make_trainer(root / "resumed")
    interrupted.on_metrics = stop_after_two
    with pytest.raises(Interrupt):
        interrupted.train()
    resumed = make_trainer(root / "resumed")
    assert resumed.iteration == 2 and resumed.pending == interrupted.pending
    assert resumed.optimizer_steps == interrupted.optimizer_steps
    resumed.train()
    return straight, interrupted, resumed
