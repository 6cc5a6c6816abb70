"""Prefect flows: thin wrappers that call ``star``/``rewards`` functions and add retries of
transient failures, logging and MLflow tracking. Each stage runs as ``python -m pipelines
<stage>`` (``pipelines/cli.py``).

Prefect settings must be in the environment before Prefect is imported: its ephemeral API
server takes 15–35 s to start on a 2-core machine (more than Prefect's default start timeout),
and there is no network for its analytics.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(REPO_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
