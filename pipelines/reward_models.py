"""Stage ``reward_models``: train the embedded PickScore stand-in (the world CLIP) and measure
its image->text top-1 accuracy on held-out (unseen-combination) captions; measure how well the
OCR backend reads the world's ground-truth signs of the OCR test prompts (the task's ceiling)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.base import save_model
from pipelines.cli import stage_config, stage_main
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from rewards.ocr import OcrReward
from rewards.pickscore import PickScoreReward
from star.config import Config, fingerprint
from star.files import write_text
from star.rl import checkpoint
from star.world.clip import WORLD_CLIP_DIR, WorldClip, heldout_accuracy, heldout_set, train_world_clip
from star.world.prompts import generate_prompt_sets, render_records, world_text
from star.world.render import world_layout

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


@task(cache_policy=NO_CACHE)
def ocr_ceiling(cfg: Config) -> dict[str, float]:
    """The OCR backend on the world's own renders of its OCR test prompts, drawn as pretraining
    draws them: the ceiling of the OCR task (exact match and normalised edit distance, means)."""
    records = generate_prompt_sets(cfg.seed, 0, cfg.world.test_prompts, text=world_text(cfg.world))["ocr"]["test"]
    pixels = render_records(records, cfg.world.image_size, np.random.default_rng(cfg.seed), world_layout(cfg.world))
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    reward = OcrReward(cfg.rewards.ocr_backend, cfg.rewards.easyocr_model_dir)
    results = reward.evaluate(images, [r["prompt"] for r in records], records)
    return {"ocr_ground_truth_exact": round(float(np.mean([r.exact for r in results])), 4),
            "ocr_ground_truth_edit_distance": round(float(np.mean([r.edit_distance_normalised for r in results])), 4)}


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
            **ocr_ceiling(cfg),
            "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - start, 1),
        }
        log_metrics(metrics)
        cfg.paths.metrics.mkdir(parents=True, exist_ok=True)
        write_text(cfg.paths.metrics / "reward_models.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work_dir, ignore_errors=True)  # the model is saved: checkpoints are spent
    checkpoint.remove_empty_folders(work_dir.parent)
    logger.info("reward_models: %s", metrics)
    return metrics


if __name__ == "__main__":
    stage_main("reward_models")
