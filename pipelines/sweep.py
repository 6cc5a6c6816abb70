"""Ablation sweeps: the study (variants × seeds, DVC matrix stages) once per training task, each
as a `dvc exp run`, orchestrated by Prefect.

    python -m pipelines.sweep                       # run now: study.sweep_tasks x study.seeds
    python -m pipelines.sweep --tasks geneval ocr --seeds 0 1 2
    python -m pipelines.sweep --serve --cron "0 2 * * *"   # a scheduled deployment (needs a server)

The scheduled form registers the deployment ``sweep/scheduled-sweep`` with the Prefect server in
``PREFECT_API_URL`` (start one with ``prefect server start``) and serves it until stopped.
"""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from prefect import flow, get_run_logger, task

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines import REPO_ROOT
from pipelines.failures import retry_if_transient
from star.config import load_config

DEPLOYMENT_NAME = "scheduled-sweep"


def experiment_command(train_task: str, seeds: list[int], name: str | None = None) -> list[str]:
    """The `dvc exp run` of one sweep cell: the whole DAG with the task and seeds overridden."""
    command = ["dvc", "exp", "run", "-S", f"rewards.task={train_task}", "-S", f"study.seeds={list(seeds)}"]
    return command + (["--name", name] if name else [])


@task(retries=1, retry_delay_seconds=30, retry_condition_fn=retry_if_transient)
def run_experiment(train_task: str, seeds: list[int], name: str) -> str:
    """One experiment; a retry resumes (DVC skips stages whose outputs are already cached)."""
    result = subprocess.run(experiment_command(train_task, seeds, name), cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(experiment_command(train_task, seeds, name))}` failed:\n{result.stderr[-2000:]}")
    return name


@flow(name="sweep")
def sweep(tasks: list[str] | None = None, seeds: list[int] | None = None, params: str = "params.yaml") -> list[str]:
    """Run the study for every training task in ``tasks`` (default ``study.sweep_tasks``) with
    ``seeds`` (default ``study.seeds``); returns the DVC experiment names (`dvc exp show`)."""
    cfg = load_config(params)
    tasks = tasks or list(cfg.study.sweep_tasks)
    seeds = seeds or list(cfg.study.seeds)
    names = []
    for train_task in tasks:
        name = f"sweep-{train_task}-seeds-{'-'.join(map(str, seeds))}"
        names.append(run_experiment(train_task, seeds, name))
    get_run_logger().info("sweep finished: %s (compare with `dvc exp show` and MLflow)", names)
    return names


def deployment(cron: str, parameters: dict[str, Any] | None = None) -> Any:
    """The scheduled sweep as a Prefect deployment object (``.apply()`` registers it)."""
    return sweep.to_deployment(name=DEPLOYMENT_NAME, cron=cron, parameters=parameters or {})


def reachable_server() -> str:
    """The URL of the Prefect server that ``--serve`` registers with; exits non-zero saying
    what to do when none is configured or it does not answer (an ephemeral server cannot hold
    schedules: serving would idle without ever running anything)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise SystemExit("error: --serve needs a running Prefect server: start one with `prefect server start`, "
                         "then export PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise SystemExit(f"error: the Prefect server at PREFECT_API_URL={url} does not answer ({error}); "
                         "start it with `prefect server start`") from None
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=None, help="training tasks (default: study.sweep_tasks)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="seeds (default: study.seeds)")
    parser.add_argument("--serve", action="store_true", help="register a scheduled deployment and serve it")
    parser.add_argument("--cron", default="0 2 * * *", help="schedule of --serve (default: 02:00 daily)")
    args = parser.parse_args()
    parameters = {k: v for k, v in {"tasks": args.tasks, "seeds": args.seeds}.items() if v}
    if args.serve:
        reachable_server()
        sweep.serve(name=DEPLOYMENT_NAME, cron=args.cron, parameters=parameters)
    else:
        sweep(**parameters)


if __name__ == "__main__":
    main()
