"""Stage ``prepare``: write every task's training and evaluation prompts to ``paths.prompts``.

Per task, ``prompt_sets`` picks the embedded world's generated set or a file (GenEval metadata,
OCR or plain prompts; GenEval training prompts may also come from GenEval's templates); files
are validated line by line and copied in one layout, so ``train`` and ``evaluate`` read only
what this stage wrote (docs/architecture.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task

import pipelines  # noqa: F401  (Prefect settings before Prefect starts)
from pipelines.cli import stage_main
from pipelines.failures import retry_if_transient
from pipelines.tracking import log_metrics, stage_run
from star.config import Config, load_config
from star.data.task_prompts import check_prompt_files, materialise_prompt_sets, sources
from star.files import write_text
from star.world.prompts import generate_prompt_sets, world_text


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)  # a network filesystem may hiccup
def write_prompt_sets(cfg: Config) -> dict[str, int]:
    world = generate_prompt_sets(seed=cfg.seed, n_train=cfg.world.train_prompts, n_test=cfg.world.test_prompts,
                                 text=world_text(cfg.world))
    return materialise_prompt_sets(cfg.prompt_sets, world, cfg.paths.prompts)


@flow(name="prepare")
def prepare(params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, int]:
    cfg = load_config(params, overrides)
    check_prompt_files(cfg.prompt_sets)  # before any run is opened
    logger = get_run_logger()
    with stage_run(cfg, "prepare", ["world", "prompt_sets", "paths"]):
        counts = write_prompt_sets(cfg)
        path: Path = cfg.paths.prompts / "counts.json"
        write_text(path, json.dumps(counts, indent=2, sort_keys=True) + "\n")
        log_metrics(counts)
        mlflow.log_artifacts(str(cfg.paths.prompts), "prompts")
    for name, value in sources(cfg.prompt_sets).items():
        logger.info("prompt set %s: %s", name, value)
    logger.info("prompt counts: %s", counts)
    return counts


if __name__ == "__main__":
    stage_main("prepare")
