"""The scheduled sweep: a Prefect deployment with a cron schedule, created in Prefect's test harness."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client

from pipelines.sweep import DEPLOYMENT_NAME, deployment, experiment_command


def test_experiment_command_overrides_task_and_seeds() -> None:
    assert experiment_command("ocr", [0, 1], ["default", "tasks"], "sweep-ocr") == [
        "dvc", "exp", "run", "-S", "rewards.task=ocr", "-S", "studies.default.seeds=[0, 1]",
        "-S", "studies.tasks.seeds=[0, 1]", "--name", "sweep-ocr"]


def test_scheduled_deployment_has_its_schedule_and_parameters(prefect_server) -> None:
    parameters = {"tasks": ["geneval", "ocr"], "seeds": [0, 1, 2]}
    deployment_id = deployment("0 3 * * 1", parameters).apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
        assert stored.name == DEPLOYMENT_NAME
        assert stored.parameters == parameters
        assert [s.schedule.cron for s in stored.schedules] == ["0 3 * * 1"]
        assert client.read_flow(stored.flow_id).name == "sweep"


@pytest.mark.slow
def test_serve_without_a_server_fails_with_what_to_do(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    for url, message in ((None, "--serve and --deploy need a running Prefect server"),
                         ("http://127.0.0.1:9/api", "does not answer")):
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PYTHONPATH": str(REPO)}
        if url:
            env["PREFECT_API_URL"] = url
        result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--serve"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_a_running_experiment_streams_its_stages_and_reward() -> None:
    import sys

    import pytest

    from pipelines.sweep import stream_experiment

    script = ("import sys\n"
              "print(\"Running stage 'train@star-0':\", flush=True)\n"
              "for r in (0.125, 0.25, 0.5): sys.stderr.write(f'train star: {r}| reward={r:.3f}, kl=0\\r')\n"
              "print(\"Running stage 'evaluate@star-0':\")\n")
    messages: list[str] = []
    stream_experiment([sys.executable, "-c", script], messages.append, reward_every=3600)
    # the first reward of a stage is logged, the next ones wait reward_every seconds
    assert messages == ["stage train@star-0", "stage train@star-0: training reward 0.125", "stage evaluate@star-0"]
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\):\nlast words"):
        stream_experiment([sys.executable, "-c", "print('last words'); raise SystemExit(3)"], messages.append)


def test_a_scheduled_run_of_a_served_deployment_executes(prefect_server, tmp_path) -> None:
    """What `--serve` does, on the micro config's `prepare` flow: a Runner holds the scheduled
    deployment; a run that the scheduler would create (scheduled for now) is picked up and runs."""
    import asyncio

    import pendulum
    from prefect.client.schemas.objects import StateType
    from prefect.runner import Runner
    from prefect.states import Scheduled

    from pipelines.prepare import prepare
    from pipelines.sweep import scheduled
    from tests.conftest import MICRO, micro_overrides

    parameters = {"params": str(MICRO), "overrides": micro_overrides(tmp_path)}
    deployment = scheduled(prepare, "scheduled-prepare", "0 3 * * *", parameters)

    async def fire() -> StateType:
        runner = Runner(name="test-runner", query_seconds=1)
        deployment_id = await runner.add_deployment(deployment)
        async with get_client() as client:
            stored = await client.read_deployment(deployment_id)
            assert [s.schedule.cron for s in stored.schedules] == ["0 3 * * *"]
            run = await client.create_flow_run_from_deployment(
                deployment_id, state=Scheduled(scheduled_time=pendulum.now("UTC")))
            await runner.start(run_once=True)
            return (await client.read_flow_run(run.id)).state.type

    assert asyncio.run(fire()) == StateType.COMPLETED
    assert (tmp_path / "data" / "prompts" / "counts.json").is_file(), "the scheduled prepare ran and wrote its prompts"


def test_the_sweep_deploys_to_a_process_work_pool(prefect_server) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    from pipelines.sweep import deploy_to_work_pool
    from tests.conftest import REPO

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="star-process", type="process"), overwrite=True)
        deployment_id = deploy_to_work_pool("star-process", "0 4 * * *", {"tasks": ["ocr"], "seeds": [0]})
        stored = client.read_deployment(deployment_id)
    assert stored.work_pool_name == "star-process" and stored.entrypoint == "pipelines/sweep.py:sweep"
    assert stored.parameters == {"tasks": ["ocr"], "seeds": [0]}
    assert [s.schedule.cron for s in stored.schedules] == ["0 4 * * *"]
    assert str(REPO) in json.dumps(stored.pull_steps), "a worker runs the flow from this checkout"
