"""MLflow tracking shared by every stage: one run per stage invocation, tagged for comparison."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param

from pipelines.failures import process_alive, this_process
from star.config import DEFAULT_STUDY, Config


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def project_root(cwd: Path | None = None) -> Path:
    """Where relative tracking paths live: the working directory, or, inside a workspace that
    `dvc exp run --temp/--queue` made under ``<project>/.dvc/tmp/exps/``, the project itself (the
    temporary workspace is deleted afterwards, and its runs with it)."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return cwd


def tracking_uri(uri: str, cwd: Path | None = None) -> str:
    """``uri`` with a relative ``sqlite:///`` path made absolute against ``project_root``."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(project_root(cwd) / uri[len(prefix):])
    return uri


def artifact_location(artifacts: str, cwd: Path | None = None) -> str:
    """The artifact root as a URI; a relative folder is taken against ``project_root``."""
    if "://" in artifacts:
        return artifacts
    path = Path(artifacts)
    return (path if path.is_absolute() else project_root(cwd) / path).resolve().as_uri()


def experiment_name(cfg: Config) -> str:
    """One MLflow experiment per study: ``tracking.experiment`` for the default study,
    ``<experiment>-<study>`` for the others (``star-tasks``), so that the runs of two studies
    (each has its ``evaluate-base`` and ``report``) never share a table."""
    if cfg.study_name == DEFAULT_STUDY:
        return cfg.tracking.experiment
    return f"{cfg.tracking.experiment}-{cfg.study_name}"


def experiment_id(cfg: Config) -> str:
    """The study's experiment, created with a local artifact root on first use."""
    mlflow.set_tracking_uri(tracking_uri(cfg.tracking.uri))
    name = experiment_name(cfg)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(
        name, artifact_location=artifact_location(cfg.tracking.artifacts),
        tags={"study": cfg.study_name,
              "mlflow.note.content": f"STAR study '{cfg.study_name}': one run per DVC stage (`prepare`, `base`, "
              "`reward_models`, `train-star-s0` for variant star and seed 0, `evaluate-star-s0`, `report`); "
              "evaluations are nested under the training run they evaluate, and each training run logs its "
              "variant as a model named `<variant>-s<seed>`."},
    )


def stage_command(argv: list[str] | None = None) -> str | None:
    """The command that ran the stage, as the run's source: ``python -m pipelines train
    --variant star --seed 0`` (MLflow would show ``__main__.py``); None outside ``python -m pipelines``."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).parent.name != "pipelines":
        return None
    module = "pipelines" if Path(argv[0]).name == "__main__.py" else f"pipelines.{Path(argv[0]).stem}"
    return " ".join(["python", "-m", module, *argv[1:]])


def training_run_of(experiment: str, tags: dict[str, str]) -> str | None:
    """The latest finished training run of the checkpoint an evaluation scores, if any."""
    if "checkpoint" not in tags or tags.get("variant") in (None, "base"):
        return None
    found = mlflow.MlflowClient().search_runs(
        [experiment], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=(f"tags.stage = 'train' and tags.variant = '{tags['variant']}' and "
                       f"tags.seed = '{tags.get('seed', '')}' and attributes.status = 'FINISHED'"),
    )
    return found[0].info.run_id if found else None


def run_name(stage: str, tags: dict[str, str]) -> str:
    """What the run is, for the runs table and chart legends: ``train-star-s0``,
    ``evaluate-star-s0``, ``evaluate-base``, ``base``, ``report``; a training by another
    algorithm than Flow-GRPO/STAR's names it unless the variant's name does: ``train-nft-none-s0``."""
    if "checkpoint" in tags:
        return f"{stage}-{tags['checkpoint']}"
    if stage == "train" and "variant" in tags and "seed" in tags:
        algorithm, variant = tags.get("algorithm", "grpo"), tags["variant"]
        named = variant if algorithm == "grpo" or variant.startswith(algorithm) else f"{algorithm}-{variant}"
        return f"{stage}-{named}-s{tags['seed']}"
    return stage


def register_checkpoint(cfg: Config, variant: str, seed: int, registered: str, tags: dict[str, str]) -> str | None:
    """Register the model that the training run of ``variant`` and ``seed`` logged (named like its
    checkpoint, ``<variant>-s<seed>``, or its only model) as a new version of ``registered`` in the Model Registry, with
    ``tags``; returns the version, or None when the study's experiment holds no finished training
    run that logged it."""
    checkpoint = f"{variant}-s{seed}"
    experiment = experiment_id(cfg)
    run_id = training_run_of(experiment, {"checkpoint": checkpoint, "variant": variant, "seed": str(seed)})
    if run_id is None:
        return None
    logged = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list",
                                         filter_string=f"source_run_id = '{run_id}'")
    named = [model for model in logged if model.name == checkpoint]
    if not named and len(logged) == 1:  # a run logged before models were named like their checkpoint
        named = logged
    if not named:
        return None
    version = mlflow.register_model(named[0].model_uri, registered,
                                    tags={"study": cfg.study_name, "checkpoint": checkpoint, **tags})
    return str(version.version)


PROCESS_TAG = "star.process"
"""``<pid>:<start time>`` of the process that owns a run, to find runs left RUNNING by a kill -9."""


def end_orphaned_runs(experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs whose process no longer exists (killed with SIGKILL, it
    could not end them); returns their ids."""
    client = mlflow.MlflowClient()
    ended = []
    for run in client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(PROCESS_TAG)
        if owner and not process_alive(owner):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


RESUMED = "resumed_from"
"""The tag (and ``extra`` key of ``star.rl.checkpoint.log_resume``'s record) of a run that resumed
from a checkpoint: the iteration or step it resumed at; ``resumed_checkpoint`` names the file."""


class _ResumeTags(logging.Handler):
    """Tags an MLflow run with the ``RESUMED`` records ``star`` logs while it is active."""

    def __init__(self, run_id: str) -> None:
        super().__init__(logging.INFO)
        self.run_id = run_id

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, RESUMED):
            client = mlflow.MlflowClient()
            client.set_tag(self.run_id, RESUMED, str(getattr(record, RESUMED)))
            client.set_tag(self.run_id, "resumed_checkpoint", str(getattr(record, "checkpoint", "")))


@contextmanager
def resume_tags(run_id: str) -> Iterator[None]:
    """While the block runs, a resume that ``star`` logs tags the run ``run_id``; ``star``'s INFO
    lines (that resume) reach the console."""
    star, handler = logging.getLogger("star"), _ResumeTags(run_id)
    level = star.level
    star.setLevel(min(star.getEffectiveLevel(), logging.INFO))
    star.addHandler(handler)
    try:
        yield
    finally:
        star.removeHandler(handler)
        star.setLevel(level)


@contextmanager
def stage_run(cfg: Config, stage: str, sections: list[str], tags: dict[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run for ``stage`` logging the config ``sections`` it depends on as params.

    It ends FINISHED, FAILED on an error, or KILLED on SIGTERM/SIGINT; runs of processes that
    were killed outright are marked KILLED when the next stage starts."""
    dump = cfg.model_dump(mode="json") | {"study": cfg.study.model_dump(mode="json")}  # "study": the one it runs
    params = _flatten({name: dump[name] for name in sections})
    params["seed"] = cfg.seed
    tags = tags or {}
    experiment = experiment_id(cfg)
    end_orphaned_runs(experiment)
    links = {}
    trained_by = training_run_of(experiment, tags) if stage == "evaluate" else None
    if trained_by:  # the UI nests the evaluation under the training run it evaluates
        links = {"mlflow.parentRunId": trained_by, "star.trained_by": trained_by}
    command = stage_command()
    source = {"mlflow.source.name": command} if command else {}
    run = mlflow.start_run(experiment_id=experiment, run_name=run_name(stage, tags),
                           tags={"stage": stage, "study": cfg.study_name, PROCESS_TAG: this_process(), **source,
                                 **links, **tags})
    try:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        with resume_tags(run.info.run_id):
            yield run
    except Exception:
        mlflow.end_run("FAILED")
        raise
    except BaseException:  # SIGTERM/SIGINT (pipelines.failures.StageInterrupted), KeyboardInterrupt
        mlflow.end_run("KILLED")
        raise
    mlflow.end_run("FINISHED")


FIGURES_STAGE = "figures"
"""The ``stage`` tag of a training run's figures run (``figures_run``)."""


@contextmanager
def figures_run(parent: Any, tags: dict[str, str]) -> Iterator[str]:
    """A run nested under the training run ``parent`` that holds its per-step images, tagged and
    parametrised with ``tags`` alone: MLflow's image cards list every parameter of a run above its
    images, and a training run's hundred knobs push the picture out of view. The training run keeps
    every parameter and metric. Yields the run id; the run ends with the block, FINISHED or FAILED."""
    client = mlflow.MlflowClient()
    parent_tags = parent.data.tags
    run = client.create_run(
        parent.info.experiment_id, run_name=f"{parent.info.run_name}-figures",
        tags={**tags, "stage": FIGURES_STAGE, "study": parent_tags.get("study", ""),
              PROCESS_TAG: parent_tags.get(PROCESS_TAG, this_process()), "mlflow.parentRunId": parent.info.run_id,
              "mlflow.note.content": "Sample grids and allocation maps of the parent training run; "
                                     "step: RL iterations completed before the pictured rollouts were sampled "
                                     "(0: the starting weights)."})
    try:
        client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in tags.items()])
        yield run.info.run_id
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    except BaseException:  # SIGTERM/SIGINT, as stage_run
        client.set_terminated(run.info.run_id, "KILLED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    """Log metrics at ``step``; an ``iteration`` entry is the step itself, not a metric (it would
    become the compare view's default axis)."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items() if k != "iteration"}, step=step)
