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


def test_a_running_experiment_streams_its_stages_and_its_trainings_progress() -> None:
    import sys
    import threading

    import pytest

    from pipelines.sweep import stream_experiment

    script = ("import time\n"
              "print(\"Running stage 'train@star-0':\", flush=True)\n"
              "time.sleep(1.5)\n"
              "print(\"Running stage 'evaluate@star-0':\")\n")
    messages: list[str] = []
    polled = threading.Event()

    def progress() -> list[str]:
        polled.set()
        return ["train-star-s0: iteration 3/32, training reward 0.250"]

    stream_experiment([sys.executable, "-c", script], messages.append, progress=progress, every=0.5)
    assert polled.is_set() and messages[0] == "stage train@star-0" and messages[-1] == "stage evaluate@star-0"
    assert "train-star-s0: iteration 3/32, training reward 0.250" in messages
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\):\nlast words"):
        stream_experiment([sys.executable, "-c", "print('last words'); raise SystemExit(3)"], messages.append)


def test_training_progress_reads_the_running_trainings_metrics(tmp_path) -> None:
    import mlflow

    from pipelines.sweep import training_progress

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("star", artifact_location=(tmp_path / "artifacts").as_uri())
    for name, stage, status in (("train-star-s0", "train", None), ("train-none-s0", "train", "FINISHED"),
                                ("evaluate-base", "evaluate", None)):
        run = client.create_run(experiment, run_name=name, tags={"stage": stage})
        client.log_param(run.info.run_id, "train.iterations", "32")
        for step, reward in ((1, 0.125), (2, 0.25)):
            client.log_metric(run.info.run_id, "reward_mean", reward, step=step)
        if status:
            client.set_terminated(run.info.run_id, status)
    assert training_progress(uri, ["star", "star-tasks"]) == ["train-star-s0: iteration 2/32, training reward 0.250"]
    assert training_progress(uri, ["star-ablations"]) == []  # not created yet


def test_sweep_runs_are_named_by_their_tasks_and_seeds(monkeypatch) -> None:
    from types import SimpleNamespace

    import pipelines.sweep as sweep

    monkeypatch.setattr(sweep, "flow_run", SimpleNamespace(parameters={"tasks": ["geneval", "ocr"], "seeds": [0, 1]}))
    assert sweep.sweep_run_name() == "sweep-geneval-ocr-s0.1"
    monkeypatch.setattr(sweep, "flow_run", SimpleNamespace(parameters={}))  # the defaults of params.yaml
    cfg = sweep.load_config("params.yaml")
    assert sweep.sweep_run_name() == "sweep-" + sweep.experiment_name("-".join(cfg.sweep.tasks), list(cfg.study.seeds))
    assert sweep.experiment_name("ocr", [0, 1, 2, 3]) == "ocr-s0-3" and sweep.seeds_label([2, 0]) == "s2.0"


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
