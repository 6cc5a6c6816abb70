"""Checkpoint evaluation: fixed-seed ODE sampling on test prompts, scored by each task's metrics.

Every checkpoint sees the same noise (seed ``eval.seed + index`` per prompt), so differences
between checkpoints are differences of the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers import StableDiffusion3Pipeline

from rewards.geneval import GenEvalReward
from rewards.geneval_rules import geneval_summary
from star.config import EvalConfig
from star.sampling import sample_ode


@dataclass
class TaskReport:
    """metrics: named scalars; images: (N, 3, H, W) in [0, 1]; prompts: N; marks: N verdicts
    (None where a task has no pass/fail)."""

    metrics: dict[str, float]
    images: torch.Tensor
    prompts: list[str]
    marks: list[bool] | None = None


class _Scorer(Protocol):
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor: ...


def sample_records(pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, progress: bool = True) -> torch.Tensor:
    """One image per record with seed ``cfg.seed + index``: (N, 3, H, W) in [0, 1]."""
    prompts = [r["prompt"] for r in records]
    seeds = [cfg.seed + i for i in range(len(records))]
    return sample_ode(pipe, prompts, seeds, cfg.steps, cfg.guidance_scale, cfg.batch_size, progress=progress)


def evaluate_geneval(
    pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, reward: GenEvalReward, progress: bool = True
) -> TaskReport:
    """Strict GenEval: per-task accuracies and 'overall' (the mean of the task accuracies)."""
    images = sample_records(pipe, records, cfg, progress)
    results = reward.evaluate(images, records)
    correct = [r.correct for r in results]
    summary = geneval_summary([r["tag"] for r in records], correct)
    return TaskReport({f"geneval_{k}": v for k, v in summary.items()}, images, [r["prompt"] for r in records], correct)


def evaluate_ocr(pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, reward: Any, progress: bool = True) -> TaskReport:
    """OCR: exact-match accuracy, mean normalised edit distance and mean reward."""
    images = sample_records(pipe, records, cfg, progress)
    results = reward.evaluate(images, [r["prompt"] for r in records])
    count = max(1, len(results))
    metrics = {
        "ocr_accuracy": sum(r.exact for r in results) / count,
        "ocr_edit_distance": sum(r.edit_distance_normalised for r in results) / count,
        "ocr_reward": sum(r.reward for r in results) / count,
    }
    return TaskReport(metrics, images, [r["prompt"] for r in records], [bool(r.exact) for r in results])


def evaluate_pickscore(pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, reward: _Scorer, progress: bool = True) -> TaskReport:
    """Preference: mean PickScore (logit-scale units) of the images for their prompts."""
    images = sample_records(pipe, records, cfg, progress)
    prompts = [r["prompt"] for r in records]
    scores = reward.score(images, prompts, records)
    return TaskReport({"pickscore_mean": scores.mean().item(), "pickscore_std": scores.std(unbiased=False).item()}, images, prompts)


def balanced_subset(records: list[dict[str, Any]], per_tag: int) -> list[dict[str, Any]]:
    """The first ``per_tag`` records of each tag, in file order (a fixed, balanced test subset)."""
    counts: dict[str, int] = {}
    subset = []
    for record in records:
        if counts.get(record["tag"], 0) < per_tag:
            counts[record["tag"]] = counts.get(record["tag"], 0) + 1
            subset.append(record)
    return subset
