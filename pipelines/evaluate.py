"""Stage ``evaluate``: score one checkpoint (the base model or a trained variant) on the test
prompts of every task in the study's ``eval_tasks``.

    python -m pipelines evaluate --checkpoint base
    python -m pipelines evaluate --checkpoint star-s0

Writes ``metrics/eval/<checkpoint>.json`` (read by `dvc metrics show/diff`), the score of every
(task, prompt, noise) image in ``metrics/eval/<checkpoint>.scores.csv`` (the report's paired
comparisons) and a sample grid per task under ``<paths.eval_samples>/<checkpoint>/``, and logs
them to MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import stage_config, stage_main
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from rewards.base import Reward
from star.config import Config, EvalTask
from star.evaluation.evaluate import TASK_EVALUATORS, TaskReport, balanced_subset
from star.evaluation.figures import report_grid
from star.files import atomic_file, write_text
from star.models.sd3 import pipeline_for
from star.models.variants import load_variant, variant_info
from star.rl.checkpoint import remove_if_left_empty
from star.rl.prompt_source import load_task_prompts, training_pool
from star.scoring import build_reward


def test_records(cfg: Config, task_name: str) -> list[dict[str, Any]]:
    """The fixed test subset of a task: balanced GenEval tags, the first N OCR/preference prompts."""
    records = load_task_prompts(cfg.paths.prompts, task_name, "test")
    if task_name == "geneval":
        return balanced_subset(records, cfg.eval.geneval_per_tag)
    return records[: cfg.eval.ocr_prompts if task_name == "ocr" else cfg.eval.pickscore_prompts]


def evaluation_reward(cfg: Config, task_name: str) -> Reward:
    """The task's own reward with ``cfg``'s backends, no mix, and GenEval strict (the official
    0/1 verdicts), whatever training used: what every checkpoint is scored with."""
    strict = cfg.rewards.model_copy(update={"geneval_partial_credit": False})
    return build_reward(strict.for_task(task_name), cfg.paths.reward_models)


def score_task(pipe: Any, cfg: Config, task_name: str) -> TaskReport:
    """Sample the task's test prompts and score them with the task's reward backend."""
    return TASK_EVALUATORS[task_name](pipe, test_records(cfg, task_name), cfg.eval, evaluation_reward(cfg, task_name))


POOL_PREFIX = "pool_"
"""Task-name prefix of the training-pool scores (``pool_geneval``) in a checkpoint's score rows."""


def pool_records(cfg: Config) -> list[dict[str, Any]]:
    """The prompts ``cfg`` trains on (its task's training split, ``train.prompt_pool`` of them)."""
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    return training_pool(records, cfg.train.prompt_pool, cfg.train.pool_seed, cfg.seed)


def score_pool(pipe: Any, cfg: Config) -> TaskReport:
    """The training prompts sampled by the evaluation sampler on ``eval.pool_noises`` fixed noises
    each and scored by the task's evaluation (strict) and by the training reward (column
    ``reward``, partial credit and reward mixes included): the same noises before and after
    training, so a gain is measured pair by pair (docs/method.md §9.2)."""
    task_name = cfg.rewards.task
    records = pool_records(cfg)
    eval_cfg = cfg.eval.model_copy(update={"noises": cfg.eval.pool_noises})
    report = TASK_EVALUATORS[task_name](pipe, records, eval_cfg, evaluation_reward(cfg, task_name), progress=False)
    repeated = [records[row["prompt_index"]] for row in report.rows]
    rewards = build_reward(cfg.rewards, cfg.paths.reward_models).score(report.images, report.prompts, repeated)
    for row, value in zip(report.rows, rewards.tolist(), strict=True):
        row["reward"] = value
    report.metrics = {f"{POOL_PREFIX}reward_{task_name}": float(rewards.mean())}
    return report


SAMPLER_PREFIX = "train_sampler_"
"""Task-name prefix of the held-out scores under the training rollouts' step count (``train_sampler_geneval``)."""


def score_with_training_sampler(pipe: Any, cfg: Config) -> TaskReport:
    """The held-out prompts of ``cfg``'s training task sampled as the evaluation does but with
    the training rollouts' ``train.steps`` (ODE): beside the evaluation sampler's table it shows
    a gain that holds under one sampler and not the other (docs/method.md §9.2)."""
    task_name = cfg.rewards.task
    eval_cfg = cfg.eval.model_copy(update={"steps": cfg.train.steps})
    report = TASK_EVALUATORS[task_name](pipe, test_records(cfg, task_name), eval_cfg,
                                        evaluation_reward(cfg, task_name), progress=False)
    report.metrics = {f"{SAMPLER_PREFIX}{key}": value for key, value in report.metrics.items()}
    return report


def training_configs(cfg: Config, variant: str, seed: int | None) -> list[Config]:
    """The configs whose training pool and training sampler a checkpoint is measured with: the
    study's shared ``train`` knobs on a training task with that task's own reward, so that the base
    and every variant (whatever else it overrides) are scored on the same prompts, noises and
    reward. A trained variant: its training task, its seed's pool; the base: every evaluation task,
    when every seed trains on the same pool (``train.pool_seed`` set), so one base score serves every
    seed and it depends on no variant's knobs."""
    if variant == "base":
        if cfg.train.pool_seed is None:
            return []
        return [_on_task(cfg, task, cfg.seed) for task in cfg.study.eval_tasks]
    if variant not in cfg.study.variants:
        return []
    return [_on_task(cfg, cfg.for_variant(variant).rewards.task, cfg.seed if seed is None else seed)]


def _on_task(cfg: Config, task: EvalTask, seed: int) -> Config:
    return cfg.model_copy(update={"rewards": cfg.rewards.for_task(task), "seed": seed})


def training_measures(pipe: Any, cfg: Config, variant: str, seed: int | None) -> list[tuple[str, TaskReport]]:
    """(task name in the scores file, report) of the training-side measures: the training pool
    (``eval.pool_noises`` > 0) and the held-out prompts under the training sampler
    (``eval.training_sampler``), for each of ``training_configs``."""
    measures = []
    for train_cfg in training_configs(cfg, variant, seed):
        task_name = train_cfg.rewards.task
        if cfg.eval.pool_noises:
            measures.append((POOL_PREFIX + task_name, score_pool(pipe, train_cfg)))
        if cfg.eval.training_sampler:
            measures.append((SAMPLER_PREFIX + task_name, score_with_training_sampler(pipe, train_cfg)))
    return measures


@task(cache_policy=NO_CACHE)
def load_checkpoint(cfg: Config, checkpoint: str) -> Any:
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    if checkpoint != "base":
        load_variant(pipe, cfg.paths.checkpoints / checkpoint)
    return pipe


@task(retries=1, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def evaluate_task(pipe: Any, cfg: Config, task_name: str, checkpoint: str, out_dir: Path) -> TaskReport:
    report = score_task(pipe, cfg, task_name)
    headline = next(iter(report.metrics))
    grid = report_grid(report, cfg.eval.grid, out_dir / f"{task_name}.png",
                       f"{checkpoint}: {headline} {report.metrics[headline]:.3f}")
    mlflow.log_artifact(str(grid), "samples")
    return report


def scores_path(metrics_dir: Path, checkpoint: str) -> Path:
    """Per-(task, prompt, noise) scores of a checkpoint, beside its summary metrics."""
    return metrics_dir / "eval" / f"{checkpoint}.scores.csv"


@flow(name="evaluate")
def evaluate(checkpoint: str, params: str = "params.yaml", overrides: dict[str, Any] | None = None,
             study: str = "default") -> dict[str, float]:
    cfg = stage_config(params, overrides).for_study(study)
    info = variant_info(cfg.paths.checkpoints / checkpoint) if checkpoint != "base" else {}
    variant = checkpoint.rsplit("-s", 1)[0] if checkpoint != "base" else "base"
    tags = {"variant": variant, "checkpoint": checkpoint, "seed": str(info.get("seed", cfg.seed)),
            "task": str(info.get("task", "base"))}
    out_dir = cfg.paths.eval_samples / checkpoint
    out_dir.mkdir(parents=True, exist_ok=True)
    with remove_if_left_empty(out_dir), stage_run(cfg, "evaluate", ["eval", "study"], tags=tags):
        pipe = load_checkpoint(cfg, checkpoint)
        metrics: dict[str, float] = {}
        rows = []
        for task_name in cfg.study.eval_tasks:
            report = evaluate_task(pipe, cfg, task_name, checkpoint, out_dir)
            metrics |= report.metrics
            rows += [{"task": task_name, **row} for row in report.rows]
        for name, report in training_measures(pipe, cfg, variant, info.get("seed")):
            metrics |= report.metrics
            rows += [{"task": name, **row} for row in report.rows]
        log_metrics(metrics)
        path = cfg.paths.metrics / "eval" / f"{checkpoint}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        scores = scores_path(cfg.paths.metrics, checkpoint)
        with atomic_file(scores) as partial:
            pd.DataFrame(rows).to_csv(partial, index=False)
        mlflow.log_artifact(str(scores), "scores")
    get_run_logger().info("evaluate %s: %s", checkpoint, metrics)
    return metrics


if __name__ == "__main__":
    stage_main("evaluate")
