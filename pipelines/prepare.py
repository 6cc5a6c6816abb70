"""Stage ``prepare``: write the world's prompt sets; validate the public sets when configured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import run_stage
from pipelines.tracking import log_metrics, stage_run
from star.config import load_config
from star.prompt_sets import validate_benchmarks
from star.world.prompts import generate_prompt_sets, write_prompt_sets


@task
def write_world_sets(seed: int, train: int, test: int, out_dir: Path) -> dict[str, int]:
    sets = generate_prompt_sets(seed=seed, n_train=train, n_test=test)
    write_prompt_sets(sets, out_dir)
    return {f"world_{family}_{split}": len(rows) for family, splits in sets.items() for split, rows in splits.items()}


@task(retries=2, retry_delay_seconds=5)  # a copy on a network filesystem may hiccup
def validate_public_sets(root: Path) -> dict[str, int]:
    return {f"public_{name}": count for name, count in validate_benchmarks(root).items()}


@flow(name="prepare")
def prepare(params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, int]:
    cfg = load_config(params, overrides)
    logger = get_run_logger()
    with stage_run(cfg, "prepare", ["world", "prompt_sets", "paths"]):
        counts = write_world_sets(cfg.seed, cfg.world.train_prompts, cfg.world.test_prompts, cfg.paths.prompts)
        if cfg.prompt_sets.benchmarks_dir is not None:
            counts |= validate_public_sets(cfg.prompt_sets.benchmarks_dir)
        else:
            logger.info("prompt_sets.benchmarks_dir is null: public prompt sets not validated")
        (cfg.paths.prompts / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
        log_metrics(counts)
        mlflow.log_artifacts(str(cfg.paths.prompts), "prompts")
    logger.info("prompt sets: %s", counts)
    return counts


if __name__ == "__main__":
    run_stage(prepare, __doc__)
