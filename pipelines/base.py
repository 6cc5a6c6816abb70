"""Stage ``base``: pretrain the embedded miniature SD3 and score it on the world GenEval test set."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import run_stage, stage_config
from pipelines.tracking import log_metrics, stage_run
from rewards.geneval import GenEvalReward, world_detector
from star import checkpoint
from star.config import Config, fingerprint
from star.evaluation import TaskReport, balanced_subset, evaluate_geneval
from star.pretrain import pretrain_base
from star.prompt_sets import load_geneval_metadata
from star.visualize import note_image, report_grid

SECTIONS = ["model", "world", "base", "eval"]


def _log_progress(phase: str, metrics: dict[str, float], step: int) -> None:
    log_metrics(metrics, step=step, prefix=f"{phase}/")


# A retry resumes from the last checkpoint in the work directory, so it loses at most
# `base.checkpoint_every` steps.
@task(retries=1, cache_policy=NO_CACHE)
def pretrain(cfg: Config, work_dir: Path) -> Any:
    return pretrain_base(cfg, work_dir, on_metrics=_log_progress)


@task(cache_policy=NO_CACHE)
def save_model(pipe: Any, out_dir: Path) -> None:
    checkpoint.atomic_directory(out_dir, pipe.save_pretrained)


@task(cache_policy=NO_CACHE)
def evaluate(pipe: Any, records: list[dict[str, Any]], cfg: Config) -> TaskReport:
    return evaluate_geneval(pipe, records, cfg.eval, GenEvalReward(world_detector(), partial_credit=False))


def record_pretrained_source(cfg: Config) -> dict[str, float]:
    """With ``model.source: pretrained`` there is nothing to pretrain: the stage records which
    model the study uses (``paths.base_model``/pretrained.json) and writes its outputs, so the
    DAG runs unchanged and re-runs only when ``model`` changes."""
    source = {"source": "pretrained", "pretrained": cfg.model.pretrained, "revision": cfg.model.revision,
              "dtype": cfg.model.dtype}

    def write(staging: Path) -> None:
        staging.mkdir(parents=True)
        (staging / "pretrained.json").write_text(json.dumps(source, indent=2) + "\n")

    checkpoint.atomic_directory(cfg.paths.base_model, write)
    metrics = {"embedded_pretraining": 0.0, "train_seconds": 0.0}
    cfg.paths.metrics.mkdir(parents=True, exist_ok=True)
    (cfg.paths.metrics / "base.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    note_image(cfg.paths.metrics / "base_samples.png",
               f"base stage skipped: model.source is 'pretrained'\nthe study uses {cfg.model.pretrained}")
    return metrics


@flow(name="base")
def base(params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, float]:
    cfg = stage_config(params, overrides)
    logger = get_run_logger()
    if cfg.model.source != "embedded":
        logger.info("model.source is %r: no embedded pretraining; the study uses %s",
                    cfg.model.source, cfg.model.pretrained)
        return record_pretrained_source(cfg)
    work_dir = cfg.paths.work / "base" / fingerprint(cfg, SECTIONS)
    start = time.perf_counter()
    with stage_run(cfg, "base", SECTIONS, tags={"variant": "base"}):
        pipe = pretrain(cfg, work_dir)
        train_seconds = time.perf_counter() - start
        save_model(pipe, cfg.paths.base_model)
        records = load_geneval_metadata(cfg.paths.prompts / "geneval" / "test_metadata.jsonl")
        records = balanced_subset(records, cfg.eval.geneval_per_tag)
        report = evaluate(pipe, records, cfg)
        metrics = dict(report.metrics)
        metrics |= {"train_seconds": round(train_seconds, 1), "wall_seconds": round(time.perf_counter() - start, 1)}
        log_metrics(metrics)
        cfg.paths.metrics.mkdir(parents=True, exist_ok=True)
        (cfg.paths.metrics / "base.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        grid = report_grid(report, cfg.eval.grid, cfg.paths.metrics / "base_samples.png",
                           f"base model, world GenEval {metrics['geneval_overall']:.3f}")
        mlflow.log_artifact(str(grid), "samples")
    shutil.rmtree(work_dir, ignore_errors=True)  # the model is saved: checkpoints are spent
    logger.info("base: %s", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(base, __doc__)
