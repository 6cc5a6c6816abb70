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
an experiment runs, the sweep logs each DVC stage it enters and, every 30 s, each running
training's iteration and training reward from MLflow. The sweep's flow run is named by its tasks
and seeds, each experiment's task run by the DVC experiment it runs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines import REPO_ROOT, tracking
from pipelines.failures import retry_if_transient
from star.config import Config, load_config

DEPLOYMENT_NAME = "scheduled-sweep"


def experiment_command(train_task: str, seeds: list[int], studies: list[str], name: str | None = None) -> list[str]:
    """The `dvc exp run` of one sweep cell: the whole DAG with the training task and the seeds of
    every study in ``studies`` overridden."""
    command = ["dvc", "exp", "run", "-S", f"rewards.task={train_task}"]
    for study in studies:
        command += ["-S", f"studies.{study}.seeds={list(seeds)}"]
    return command + (["--name", name] if name else [])


STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def training_progress(tracking_uri: str, experiments: list[str]) -> list[str]:
    """One line per training running in the MLflow store at ``tracking_uri`` (in any of
    ``experiments``): its run, the iteration it reached of how many, and that iteration's training
    reward, read from the metrics the trainer logs every iteration."""
    client = mlflow.MlflowClient(tracking_uri)
    ids = [found.experiment_id for name in experiments if (found := client.get_experiment_by_name(name))]
    if not ids:
        return []
    lines = []
    for run in client.search_runs(ids, "tags.stage = 'train' and attributes.status = 'RUNNING'"):
        history = client.get_metric_history(run.info.run_id, "reward_mean")
        if history:
            last = max(history, key=lambda metric: metric.step)
            of = run.data.params.get("train.iterations", "?")
            lines.append(f"{run.info.run_name}: iteration {last.step}/{of}, training reward {last.value:.3f}")
    return sorted(lines)


def _report_every(progress: Callable[[], list[str]], log: Callable[[str], None], every: float,
                  stop: threading.Event) -> None:
    """Log ``progress()`` every ``every`` seconds until ``stop``; a store that cannot be read
    this time (locked, not created yet) is read the next time."""
    while not stop.wait(every):
        try:
            lines = progress()
        except Exception as error:  # noqa: BLE001 - progress is a courtesy; the experiment goes on
            lines = [f"training progress not readable now ({type(error).__name__}: {error})"]
        for line in lines:
            log(line)


def stream_experiment(command: list[str], log: Callable[[str], None],
                      progress: Callable[[], list[str]] | None = None, every: float = 30.0) -> None:
    """Run ``command`` (a `dvc exp run`), logging each stage it enters and, every ``every``
    seconds, the lines of ``progress`` (``training_progress``: structured metrics, not a progress
    bar's text). On failure it raises with the last 40 lines of the output."""
    tail: deque[str] = deque(maxlen=40)
    stop = threading.Event()
    reporter = threading.Thread(target=_report_every, args=(progress, log, every, stop), daemon=True)
    try:
        with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as process:
            assert process.stdout is not None
            if progress is not None:
                reporter.start()
            for line in process.stdout:
                line = line.rstrip()
                if line:
                    tail.append(line)
                if started := STAGE_LINE.search(line):
                    log(f"stage {started[1]}")
    finally:
        stop.set()
        if reporter.is_alive():
            reporter.join()
    if process.returncode != 0:
        output = "\n".join(tail)
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {process.returncode}):\n{output}")


def seeds_label(seeds: list[int]) -> str:
    """``s0-5`` for the seeds 0 to 5, ``s0.2.7`` for others: short enough for `dvc exp show`'s
    Experiment column to leave a 120-column terminal to the metrics."""
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"s{seeds[0]}-{seeds[-1]}"
    return "s" + ".".join(map(str, seeds))


def experiment_name(train_task: str, seeds: list[int]) -> str:
    """The DVC experiment's name (``geneval-s0-5``), its Prefect task run's."""
    return f"{train_task}-{seeds_label(seeds)}"


@task(retries=1, retry_delay_seconds=30, retry_condition_fn=retry_if_transient, task_run_name="{name}",
      cache_policy=NO_CACHE)
def run_experiment(cfg: Config, train_task: str, seeds: list[int], name: str) -> str:
    """One experiment, streamed into the sweep's log with its trainings' progress from MLflow; a
    retry resumes (DVC skips stages whose outputs are already cached)."""
    logger = get_run_logger()
    command = experiment_command(train_task, seeds, list(cfg.studies), name)
    experiments = [tracking.experiment_name(cfg.for_study(study)) for study in cfg.studies]
    uri = tracking.tracking_uri(cfg.tracking.uri, REPO_ROOT)
    stream_experiment(command, lambda message: logger.info("%s: %s", name, message),
                      progress=lambda: training_progress(uri, experiments))
    return name


def sweep_run_name() -> str:
    """``sweep-geneval-ocr-s0-2``: the sweep's tasks and seeds, from its parameters."""
    parameters = flow_run.parameters
    cfg = load_config(parameters.get("params", "params.yaml"))
    tasks = parameters.get("tasks") or list(cfg.sweep.tasks)
    return "sweep-" + experiment_name("-".join(tasks), parameters.get("seeds") or list(cfg.study.seeds))


@flow(name="sweep", flow_run_name=sweep_run_name)
def sweep(tasks: list[str] | None = None, seeds: list[int] | None = None, params: str = "params.yaml") -> list[str]:
    """Run the studies for every training task in ``tasks`` (default ``sweep.tasks``) with
    ``seeds`` (default: the default study's); returns the DVC experiment names (`dvc exp show`)."""
    cfg = load_config(params)
    tasks = tasks or list(cfg.sweep.tasks)
    seeds = seeds or list(cfg.study.seeds)
    names = []
    for train_task in tasks:
        names.append(run_experiment(cfg, train_task, seeds, experiment_name(train_task, seeds)))
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
