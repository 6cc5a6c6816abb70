"""Ablation sweeps: the study (variants × seeds, DVC matrix stages) once per training task, each
as a `dvc exp run`, orchestrated by Prefect.

    python -m pipelines.sweep                       # run now: sweep.tasks x the default study's seeds
    python -m pipelines.sweep --tasks geneval ocr --seeds 0 1 2
    python -m pipelines.sweep --serve --cron "0 2 * * *"   # a scheduled deployment (needs a server)
    python -m pipelines.sweep --deploy --work-pool star-process --cron "0 2 * * *"

``--serve`` registers the deployment ``sweep/scheduled-sweep`` with the Prefect server in
``PREFECT_API_URL`` (start one with ``prefect server start``) and runs its scheduled runs in this
process until stopped. ``--deploy`` registers it with a process work pool instead (create it once
with ``prefect work-pool create star-process --type process``); a worker started on any machine
with this checkout (``prefect worker start --pool star-process``) runs the scheduled runs. While
an experiment runs, the sweep logs each DVC stage it enters and the training reward.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines import REPO_ROOT
from pipelines.failures import retry_if_transient
from star.config import load_config

DEPLOYMENT_NAME = "scheduled-sweep"


def experiment_command(train_task: str, seeds: list[int], studies: list[str], name: str | None = None) -> list[str]:
    """The `dvc exp run` of one sweep cell: the whole DAG with the training task and the seeds of
    every study in ``studies`` overridden."""
    command = ["dvc", "exp", "run", "-S", f"rewards.task={train_task}"]
    for study in studies:
        command += ["-S", f"studies.{study}.seeds={list(seeds)}"]
    return command + (["--name", name] if name else [])


STAGE_LINE = re.compile(r"Running stage '([^']+)'")
REWARD = re.compile(r"reward=(-?[0-9.]+)")


def stream_experiment(command: list[str], log: Callable[[str], None], reward_every: float = 30.0) -> None:
    """Run ``command`` (a `dvc exp run`), logging each stage it enters and, at most every
    ``reward_every`` seconds, the training reward from the trainer's progress bar (whose ``\\r``
    updates text mode reads as lines). On failure it raises with the last 40 lines of the output."""
    tail: deque[str] = deque(maxlen=40)
    stage, last_reward = "", float("-inf")
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail.append(line)
            if started := STAGE_LINE.search(line):
                stage = started[1]
                log(f"stage {stage}")
            elif (reward := REWARD.search(line)) and time.monotonic() - last_reward >= reward_every:
                last_reward = time.monotonic()
                log(f"stage {stage}: training reward {reward[1]}")
    if process.returncode != 0:
        output = "\n".join(tail)
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {process.returncode}):\n{output}")


@task(retries=1, retry_delay_seconds=30, retry_condition_fn=retry_if_transient)
def run_experiment(train_task: str, seeds: list[int], studies: list[str], name: str) -> str:
    """One experiment, streamed into the sweep's log; a retry resumes (DVC skips stages whose
    outputs are already cached)."""
    logger = get_run_logger()
    command = experiment_command(train_task, seeds, studies, name)
    stream_experiment(command, lambda message: logger.info("%s: %s", name, message))
    return name


@flow(name="sweep")
def sweep(tasks: list[str] | None = None, seeds: list[int] | None = None, params: str = "params.yaml") -> list[str]:
    """Run the studies for every training task in ``tasks`` (default ``sweep.tasks``) with
    ``seeds`` (default: the default study's); returns the DVC experiment names (`dvc exp show`)."""
    cfg = load_config(params)
    tasks = tasks or list(cfg.sweep.tasks)
    seeds = seeds or list(cfg.study.seeds)
    names = []
    for train_task in tasks:
        name = f"sweep-{train_task}-seeds-{'-'.join(map(str, seeds))}"
        names.append(run_experiment(train_task, seeds, list(cfg.studies), name))
    get_run_logger().info("sweep finished: %s (compare with `dvc exp show` and MLflow)", names)
    return names


def scheduled(stage_flow: Any, name: str, cron: str, parameters: dict[str, Any] | None = None) -> Any:
    """``stage_flow`` as a deployment on a cron schedule (``.apply()`` registers it; ``--serve``
    serves it)."""
    return stage_flow.to_deployment(name=name, cron=cron, parameters=parameters or {})


def deployment(cron: str, parameters: dict[str, Any] | None = None) -> Any:
    """The scheduled sweep as a Prefect deployment object."""
    return scheduled(sweep, DEPLOYMENT_NAME, cron, parameters)


def deploy_to_work_pool(work_pool: str, cron: str, parameters: dict[str, Any] | None = None) -> Any:
    """Register the scheduled sweep with the process work pool ``work_pool``: its workers load
    ``pipelines/sweep.py:sweep`` from this checkout. Returns the deployment id."""
    # Not `flow.deploy`: in Prefect 3.8.8 it asks the server for the pool's workers with limit
    # None, which the pinned server rejects (422); `to_deployment(...).apply()` registers the same.
    source = sweep.from_source(source=str(REPO_ROOT), entrypoint="pipelines/sweep.py:sweep")
    return source.to_deployment(name=DEPLOYMENT_NAME, work_pool_name=work_pool, cron=cron,
                                parameters=parameters or {}).apply()


def reachable_server() -> str:
    """The URL of the Prefect server that ``--serve``/``--deploy`` register with; exits non-zero saying
    what to do when none is configured or it does not answer (an ephemeral server cannot hold
    schedules: serving would idle without ever running anything)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise SystemExit("error: --serve and --deploy need a running Prefect server: "
                         "start one with `prefect server start`, "
                         "then export PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise SystemExit(f"error: the Prefect server at PREFECT_API_URL={url} does not answer ({error}); "
                         "start it with `prefect server start`") from None
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=None, help="training tasks (default: sweep.tasks)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="seeds of every study (default: the default study's)")
    parser.add_argument("--serve", action="store_true", help="register a scheduled deployment and serve it")
    parser.add_argument("--deploy", action="store_true", help="register a scheduled deployment with --work-pool")
    parser.add_argument("--work-pool", default="star-process", help="process work pool of --deploy")
    parser.add_argument("--cron", default="0 2 * * *", help="schedule of --serve/--deploy (default: 02:00 daily)")
    args = parser.parse_args()
    parameters = {k: v for k, v in {"tasks": args.tasks, "seeds": args.seeds}.items() if v}
    if args.serve or args.deploy:
        reachable_server()
    if args.deploy:
        deployment_id = deploy_to_work_pool(args.work_pool, args.cron, parameters)
        print(f"deployment sweep/{DEPLOYMENT_NAME} ({deployment_id}) registered with work pool {args.work_pool!r}; "
              f"start a worker with `prefect worker start --pool {args.work_pool}`")
    elif args.serve:
        from prefect import serve

        serve(deployment(args.cron, parameters))
    else:
        sweep(**parameters)


if __name__ == "__main__":
    main()
