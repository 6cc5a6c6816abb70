"""Stage ``train``: RL post-training of one variant (``study.variants``) and seed.

    python -m pipelines train --variant star [--seed 0] [-S train.iterations=20]

Under ``accelerate launch`` / ``torchrun`` with several processes the same code runs without
Prefect (one flow per process would start one Prefect server per process); rank 0 logs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import stage_main, use_threads
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from rewards.registry import build_reward
from star import checkpoint
from star.checkpoint import remove_if_left_empty
from star.config import Config, fingerprint, load_config
from star.models import pipeline_for
from star.prompt_source import load_task_prompts
from star.trainer import TRAJECTORY_SECTIONS, Trainer
from star.variants import save_variant

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
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    steps = sorted({key for h in history for key in h if key.startswith("localisation_t")})
    columns = ["iteration", "reward_mean", "reward_std", "loss", "kl", "clip_fraction", "approx_kl", *steps]
    with (out / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{c: h.get(c, "") for c in columns} | {"iteration": int(h["iteration"])} for h in history])
    return summary


def work_dir_for(cfg: Config, name: str) -> Path:
    """The variant's resumable checkpoints, named by what determines its trajectory."""
    return cfg.paths.work / "train" / name / fingerprint(cfg, list(TRAJECTORY_SECTIONS))


def run_training(cfg: Config, name: str, log: bool = True) -> tuple[Trainer, float]:
    """Train ``cfg`` (already the variant's config) and save the EMA weights as the variant."""
    use_threads(cfg)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    work_dir = work_dir_for(cfg, name)
    trainer = Trainer(
        cfg, pipe, reward, records, work_dir,
        on_metrics=(lambda m, step: log_metrics(m, step=step)) if log else None,
        on_artifact=(lambda path, step: mlflow.log_artifact(str(path), "figures")) if log else None,
    )
    trainer.train()
    trainer.final_weights()
    if trainer.accelerator.is_main_process:
        info = {"variant": name, "seed": cfg.seed, "task": cfg.rewards.task, "train": cfg.train.model_dump(mode="json")}
        checkpoint.atomic_directory(cfg.paths.checkpoints / name, lambda path: save_variant(pipe, path, info))
    return trainer, trainer.seconds()  # earlier, interrupted attempts included


# A retry resumes from the last checkpoint in the work directory.
@task(retries=1, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def train_variant(cfg: Config, name: str) -> dict[str, float]:
    work_dir = work_dir_for(cfg, name)
    with remove_if_left_empty(work_dir, work_dir.parent):
        trainer, seconds = run_training(cfg, name)
        summary = write_outputs(cfg, name, trainer.history, seconds)
        shutil.rmtree(trainer.work_dir, ignore_errors=True)  # the variant is saved: checkpoints are spent
    return summary


@flow(name="train")
def train(variant: str, seed: int | None = None, params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, float]:
    cfg = load_config(params, overrides).for_variant(variant, seed)
    name = run_name(variant, cfg.seed)
    tags = {"variant": variant, "task": cfg.rewards.task, "seed": str(cfg.seed), "allocation": cfg.train.allocation,
            "algorithm": cfg.train.algorithm}
    with stage_run(cfg, "train", SECTIONS, tags=tags):
        summary = train_variant(cfg, name)
        log_metrics({f"final/{k}": v for k, v in summary.items()})
        mlflow.log_artifact(str(cfg.paths.metrics / "train" / f"{name}.csv"), "curves")
    get_run_logger().info("train %s: %s", name, summary)
    return summary


def run_cli(variant: str, seed: int | None, params: str, overrides: dict[str, Any]) -> None:
    """The command line's entry: the Prefect flow, or under ``accelerate launch`` with several
    processes the same training without Prefect (one flow per process would start one Prefect
    server per process); rank 0 writes the outputs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cfg = load_config(params, overrides).for_variant(variant, seed)
        name = run_name(variant, cfg.seed)
        trainer, seconds = run_training(cfg, name, log=False)
        if trainer.accelerator.is_main_process:
            write_outputs(cfg, name, trainer.history, seconds)
    else:
        train(variant=variant, seed=seed, params=params, overrides=overrides)


if __name__ == "__main__":
    stage_main("train")
