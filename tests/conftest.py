"""Shared fixtures: the micro configuration and one Prefect test server per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pipelines  # noqa: F401  (Prefect settings before Prefect is imported)

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "configs" / "micro.yaml"


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's ephemeral test server, started once (15–35 s here) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def micro_overrides(root: Path) -> dict[str, Any]:
    """Point every output of the micro config inside ``root``."""
    return {
        "paths": {
            "prompts": str(root / "data" / "prompts"),
            "base_model": str(root / "models" / "base"),
            "work": str(root / "outputs"),
            "metrics": str(root / "metrics"),
        },
        "tracking": {"uri": f"sqlite:///{root / 'mlruns.db'}", "artifacts": str(root / "mlartifacts")},
    }
