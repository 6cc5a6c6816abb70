"""Stage ``reward_models``: train the embedded PickScore stand-in (the world CLIP) and measure
its image->text top-1 accuracy on held-out (unseen-combination) captions."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.base import save_model
from pipelines.cli import stage_config, stage_main
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from rewards.pickscore import PickScoreReward
from rewards.world_clip import WORLD_CLIP_DIR, WorldClip, heldout_accuracy, heldout_set, train_world_clip
from star.world.render import world_layout
from star import checkpoint
from star.config import Config, fingerprint

SECTIONS = ["world", "rewards"]


def _log_progress(phase: str, metrics: dict[str, float], step: int) -> None:
    log_metrics(metrics, step=step, prefix=f"{phase}/")


# A retry resumes from the last checkpoint in the work directory.
@task(retries=1, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
def train(cfg: Config, work_dir: Path) -> WorldClip:
    return train_world_clip(
        cfg.rewards.world_clip, cfg.world.image_size, cfg.seed, work_dir,
        on_metrics=_log_progress, layout=world_layout(cfg.world),
    )


@task(cache_policy=NO_CACHE)
def evaluate(model_dir: Path, cfg: Config) -> float:
    """Scored through ``PickScoreReward`` from the saved folder: the path training rewards take."""
    images, captions, keys = heldout_set(
        cfg.rewards.world_clip.eval_size, cfg.world.image_size, cfg.seed, world_layout(cfg.world)
    )
    return heldout_accuracy(PickScoreReward(model_dir, model_dir, device=cfg.rewards.device), images, captions, keys)


@flow(name="reward_models")
def reward_models(params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, float]:
    cfg = stage_config(params, overrides)
    logger = get_run_logger()
    work_dir = cfg.paths.work / "reward_models" / fingerprint(cfg, SECTIONS)
    out_dir = cfg.paths.reward_models / WORLD_CLIP_DIR
    start = time.perf_counter()
    with stage_run(cfg, "reward_models", SECTIONS, tags={"variant": "world_clip"}):
        clip = train(cfg, work_dir)
        train_seconds = time.perf_counter() - start
        save_model(clip, out_dir)
        metrics = {
            "world_clip_heldout_top1": evaluate(out_dir, cfg),
            "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - start, 1),
        }
        log_metrics(metrics)
        cfg.paths.metrics.mkdir(parents=True, exist_ok=True)
        (cfg.paths.metrics / "reward_models.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work_dir, ignore_errors=True)  # the model is saved: checkpoints are spent
    checkpoint.remove_empty_folders(work_dir.parent)
    logger.info("reward_models: %s", metrics)
    return metrics


if __name__ == "__main__":
    stage_main("reward_models")
