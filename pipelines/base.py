"""Stage ``base``: pretrain the embedded miniature SD3 (``evaluate_base`` then scores it).

With ``model.source: pretrained`` there is nothing to pretrain: the stage records which model
the study uses, so the DAG runs unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import stage_config, stage_main
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from star.config import Config, fingerprint
from star.files import atomic_directory, write_text
from star.rl import checkpoint
from star.world.pretrain import pretrain_base

SECTIONS = ["model", "world", "base"]


def _log_progress(phase: str, metrics: dict[str, float], step: int) -> None:
    log_metrics(metrics, step=step, prefix=f"{phase}/")


# A retry resumes from the last checkpoint in the work directory, so it loses at most
# `base.checkpoint_every` steps.
@task(retries=1, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def pretrain(cfg: Config, work_dir: Path) -> Any:
    return pretrain_base(cfg, work_dir, on_metrics=_log_progress)


@task(cache_policy=NO_CACHE)
def save_model(pipe: Any, out_dir: Path) -> None:
    atomic_directory(out_dir, pipe.save_pretrained)


def write_metrics(cfg: Config, metrics: dict[str, float]) -> None:
    cfg.paths.metrics.mkdir(parents=True, exist_ok=True)
    write_text(cfg.paths.metrics / "base.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def record_pretrained_source(cfg: Config) -> dict[str, float]:
    """``paths.base_model``/pretrained.json names the pretrained model the study uses."""
    source = {"source": "pretrained", "pretrained": cfg.model.pretrained, "revision": cfg.model.revision,
              "dtype": cfg.model.dtype}

    def write(staging: Path) -> None:
        staging.mkdir(parents=True)
        (staging / "pretrained.json").write_text(json.dumps(source, indent=2) + "\n")

    atomic_directory(cfg.paths.base_model, write)
    metrics = {"embedded_pretraining": 0.0, "train_seconds": 0.0}
    write_metrics(cfg, metrics)
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
        metrics = {"embedded_pretraining": 1.0, "train_seconds": round(train_seconds, 1),
                   "wall_seconds": round(time.perf_counter() - start, 1)}
        log_metrics(metrics)
        write_metrics(cfg, metrics)
    shutil.rmtree(work_dir, ignore_errors=True)  # the model is saved: checkpoints are spent
    checkpoint.remove_empty_folders(work_dir.parent)
    logger.info("base: %s", metrics)
    return metrics


if __name__ == "__main__":
    stage_main("base")
