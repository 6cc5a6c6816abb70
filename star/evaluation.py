"""Checkpoint evaluation: fixed-seed ODE sampling on test prompts, scored by task metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusion3Pipeline

from rewards.geneval import GenEvalReward
from rewards.geneval_rules import geneval_summary
from star.config import EvalConfig
from star.sampling import sample_ode


@dataclass
class GenEvalReport:
    """summary: per-task accuracy and 'overall'; images: (N, 3, H, W) in [0, 1]; correct: N flags."""

    summary: dict[str, float]
    images: torch.Tensor
    correct: list[bool]


def evaluate_geneval(
    pipe: StableDiffusion3Pipeline,
    records: list[dict[str, Any]],
    cfg: EvalConfig,
    reward: GenEvalReward,
    progress: bool = True,
) -> GenEvalReport:
    """Strict GenEval score of ``pipe`` on GenEval-format ``records`` (one image per record,
    seed ``cfg.seed + index``, so every checkpoint sees the same noise)."""
    prompts = [r["prompt"] for r in records]
    seeds = [cfg.seed + i for i in range(len(records))]
    images = sample_ode(pipe, prompts, seeds, cfg.steps, cfg.guidance_scale, cfg.batch_size, progress=progress)
    results = reward.evaluate(images, records)
    correct = [r.correct for r in results]
    summary = geneval_summary([r["tag"] for r in records], correct)
    return GenEvalReport(summary, images, correct)


def balanced_subset(records: list[dict[str, Any]], per_tag: int) -> list[dict[str, Any]]:
    """The first ``per_tag`` records of each tag, in file order (a fixed, balanced test subset)."""
    counts: dict[str, int] = {}
    subset = []
    for record in records:
        if counts.get(record["tag"], 0) < per_tag:
            counts[record["tag"]] = counts.get(record["tag"], 0) + 1
            subset.append(record)
    return subset
