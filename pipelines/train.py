"""Stage ``train``: RL post-training of one variant of a study (``studies.<study>.variants``) and seed.

    python -m pipelines train --variant star [--seed 0] [-S train.iterations=20]

Under ``accelerate launch`` / ``torchrun`` with several processes the same code runs without
Prefect (one flow per process would start one Prefect server per process); rank 0 logs to
MLflow. The run logs the variant as an MLflow model (``pipelines/adapter_model.py``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from PIL import Image
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from pipelines import REPO_ROOT, tracking
from pipelines.cli import stage_main, use_threads
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from star.config import Config, fingerprint, load_config
from star.files import atomic_file, write_text
from star.models.sd3 import pipeline_for
from star.models.variants import save_variant
from star.rl.checkpoint import remove_if_left_empty
from star.rl.prompt_source import load_task_prompts
from star.rl.trainer import TRAJECTORY_SECTIONS, Trainer
from star.scoring import build_reward

SECTIONS = ["model", "train", "rewards"]


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def curve_summary(history: list[dict[str, float]]) -> dict[str, float]:
    """Training reward at the start and the end (means over the first and last 10% of
    iterations) and, for allocating variants, the maps' mean localisation on the core objects."""
    rewards = [h["reward_mean"] for h in history]
    k = max(1, len(rewards) // 10)
    start, end = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    summary = {"reward_start": start, "reward_end": end, "reward_gain": end - start, "iterations": float(len(rewards))}
    scores = [v for h in history for key, v in h.items() if key.startswith("localisation_t")]
    if scores:
        summary["localisation"] = sum(scores) / len(scores)
    return summary


def write_outputs(cfg: Config, name: str, history: list[dict[str, float]], seconds: float) -> dict[str, float]:
    """metrics/train/<name>.json (read by `dvc metrics`) and the per-iteration curve as CSV (a DVC plot)."""
    out = cfg.paths.metrics / "train"
    out.mkdir(parents=True, exist_ok=True)
    summary = curve_summary(history) | {"train_seconds": round(seconds, 1)}
    write_text(out / f"{name}.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    steps = sorted({key for h in history for key in h if key.startswith("localisation_t")})
    columns = ["iteration", "reward_mean", "reward_std", "loss", "kl", "clip_fraction", "approx_kl", *steps]
    with atomic_file(out / f"{name}.csv") as partial, partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{c: h.get(c, "") for c in columns} | {"iteration": int(h["iteration"])} for h in history])
    return summary


MODEL_CODE = REPO_ROOT / "pipelines" / "adapter_model.py"


def work_dir_for(cfg: Config, name: str) -> Path:
    """The variant's resumable checkpoints, named by what determines its trajectory."""
    return cfg.paths.work / "train" / name / fingerprint(cfg, list(TRAJECTORY_SECTIONS))


def figure_logger(run_id: str) -> Callable[[Path, int], None]:
    """Logs a training figure as an MLflow image of run ``run_id`` at ``step`` (the UI's per-step
    slider); the key is the figure's kind: ``samples_0012.png`` -> ``samples``."""
    client = mlflow.MlflowClient()

    def log_figure(path: Path, step: int) -> None:
        with Image.open(path) as image:
            client.log_image(run_id, image.convert("RGB"), key=path.stem.rsplit("_", 1)[0], step=step)
    return log_figure


def run_training(cfg: Config, variant: str, log: bool = True) -> Trainer:
    """Train ``cfg`` (already the variant's config) and save the EMA weights as the variant;
    ``log``: metrics go to the active MLflow run, figures to a run nested under it."""
    use_threads(cfg)
    name = run_name(variant, cfg.seed)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    with tracking.figures_run(mlflow.active_run(), run_tags(cfg, variant)) if log else nullcontext() as figures:
        trainer = Trainer(
            cfg, pipe, reward, records, work_dir_for(cfg, name),
            on_metrics=(lambda m, step: log_metrics(m, step=step)) if log else None,
            on_artifact=figure_logger(figures) if log else None,
        )
        trainer.train()
    trainer.final_weights()
    if trainer.accelerator.is_main_process:
        info = {"variant": name, "seed": cfg.seed, "task": cfg.rewards.task, "train": cfg.train.model_dump(mode="json")}
        save_variant(pipe, cfg.paths.checkpoints / name, info)
    return trainer


def log_variant_model(cfg: Config, name: str) -> str:
    """Log the saved variant as an MLflow model named like its checkpoint, ``runs:/<run
    id>/<variant>-s<seed>`` (``pipelines/adapter_model.py``), with the training params; returns its URI."""
    base_model = str(cfg.paths.base_model.resolve()) if cfg.model.source == "embedded" else cfg.model.pretrained
    config = {"base_model": base_model, "dtype": cfg.model.dtype, "revision": cfg.model.revision,
              "steps": cfg.eval.steps, "guidance_scale": cfg.eval.guidance_scale}
    versions = {package: metadata.version(package)
                for package in ("torch", "diffusers", "transformers", "peft", "mlflow")}
    info = mlflow.pyfunc.log_model(
        name=name, python_model=str(MODEL_CODE), artifacts={"variant": str(cfg.paths.checkpoints / name)},
        model_config={k: v for k, v in config.items() if v is not None}, code_paths=[str(REPO_ROOT / "star")],
        pip_requirements=[f"{package}=={version}" for package, version in versions.items()],
        params={f"train.{k}": str(v) for k, v in cfg.train.model_dump(mode="json").items()},
    )
    return info.model_uri


def log_outputs(cfg: Config, name: str, summary: dict[str, float]) -> None:
    """The end of a training run in MLflow: final metrics, the curve, the variant as a model."""
    log_metrics({f"final/{k}": v for k, v in summary.items()})
    mlflow.log_artifact(str(cfg.paths.metrics / "train" / f"{name}.csv"), "curves")
    log_variant_model(cfg, name)


# A retry resumes from the last checkpoint in the work directory.
@task(retries=1, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def train_variant(cfg: Config, variant: str) -> dict[str, float]:
    name = run_name(variant, cfg.seed)
    work_dir = work_dir_for(cfg, name)
    with remove_if_left_empty(work_dir, work_dir.parent):
        trainer = run_training(cfg, variant)
        summary = write_outputs(cfg, name, trainer.history, trainer.seconds())  # earlier attempts included
        shutil.rmtree(work_dir, ignore_errors=True)  # the variant is saved: checkpoints are spent
    return summary


def run_tags(cfg: Config, variant: str) -> dict[str, str]:
    return {"variant": variant, "task": cfg.rewards.task, "seed": str(cfg.seed), "allocation": cfg.train.allocation,
            "algorithm": cfg.train.algorithm}


def flow_run_name() -> str:
    """``train-star-s0`` (``train-nft-none-s0`` for another algorithm): the Prefect flow run's name,
    the MLflow run's, from its parameters (seed None: the config's)."""
    parameters = flow_run.parameters
    cfg = (load_config(parameters.get("params", "params.yaml"), parameters.get("overrides"))
           .for_study(parameters.get("study", "default")).for_variant(parameters["variant"], parameters.get("seed")))
    return tracking.run_name("train", {"variant": parameters["variant"], "seed": str(cfg.seed),
                                       "algorithm": cfg.train.algorithm})


@flow(name="train", flow_run_name=flow_run_name)
def train(variant: str, seed: int | None = None, params: str = "params.yaml", overrides: dict[str, Any] | None = None,
          study: str = "default") -> dict[str, float]:
    cfg = load_config(params, overrides).for_study(study).for_variant(variant, seed)
    name = run_name(variant, cfg.seed)
    with stage_run(cfg, "train", SECTIONS, tags=run_tags(cfg, variant)):
        summary = train_variant(cfg, variant)
        log_outputs(cfg, name, summary)
    get_run_logger().info("train %s: %s", name, summary)
    return summary


def train_processes(variant: str, seed: int | None, params: str, overrides: dict[str, Any],
                    study: str = "default") -> dict[str, float] | None:
    """One process of a multi-process training (``accelerate launch``/``torchrun``), without
    Prefect (one flow per process would start one server per process): every rank trains, rank
    0 alone tracks it in MLflow and writes the outputs; returns rank 0's summary."""
    cfg = load_config(params, overrides).for_study(study).for_variant(variant, seed)
    name = run_name(variant, cfg.seed)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with stage_run(cfg, "train", SECTIONS, tags=run_tags(cfg, variant)) if rank0 else nullcontext():
        trainer = run_training(cfg, variant, log=rank0)
        if not rank0:
            return None
        summary = write_outputs(cfg, name, trainer.history, trainer.seconds())
        log_outputs(cfg, name, summary)
    return summary


def run_cli(variant: str, seed: int | None, params: str, overrides: dict[str, Any], study: str = "default") -> None:
    """The command line's entry: the Prefect flow, or with several processes ``train_processes``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        train_processes(variant, seed, params, overrides, study)
    else:
        train(variant=variant, seed=seed, params=params, overrides=overrides, study=study)


if __name__ == "__main__":
    stage_main("train")
