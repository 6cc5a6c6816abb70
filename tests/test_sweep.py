"""The scheduled sweep: a Prefect deployment with a cron schedule, created in Prefect's test harness."""

from __future__ import annotations

from prefect.client.orchestration import get_client

from pipelines.sweep import DEPLOYMENT_NAME, deployment, experiment_command


def test_experiment_command_overrides_task_and_seeds() -> None:
    assert experiment_command("ocr", [0, 1], "sweep-ocr") == [
        "dvc", "exp", "run", "-S", "rewards.task=ocr", "-S", "study.seeds=[0, 1]", "--name", "sweep-ocr"]


def test_scheduled_deployment_has_its_schedule_and_parameters(prefect_server) -> None:
    parameters = {"tasks": ["geneval", "ocr"], "seeds": [0, 1, 2]}
    deployment_id = deployment("0 3 * * 1", parameters).apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
        assert stored.name == DEPLOYMENT_NAME
        assert stored.parameters == parameters
        assert [s.schedule.cron for s in stored.schedules] == ["0 3 * * 1"]
        assert client.read_flow(stored.flow_id).name == "sweep"


def test_serve_without_a_server_fails_with_what_to_do(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    for url, message in ((None, "--serve needs a running Prefect server"),
                         ("http://127.0.0.1:9/api", "does not answer")):
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PYTHONPATH": str(REPO)}
        if url:
            env["PREFECT_API_URL"] = url
        result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--serve"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
