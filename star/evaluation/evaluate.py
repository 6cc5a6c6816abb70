"""Checkpoint evaluation: fixed-seed ODE sampling on test prompts, scored by each task's metrics.

Every checkpoint sees the same ``eval.noises`` initial noises per test prompt (noise k of prompt
i has seed ``eval.seed + k · NOISE_STRIDE + i``), so differences between checkpoints are
differences of the models, and they can be compared pair by pair (star/evaluation/stats.py). Each report
keeps one score row per (prompt, noise) besides its summary metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from diffusers import StableDiffusion3Pipeline

from rewards.geneval import GenEvalReward
from rewards.geneval_rules import geneval_summary
from star.config import EvalConfig
from star.sampling.sampler import sample_ode

NOISE_STRIDE: int = 100_003
"""Seed offset between the noises of one prompt (more than any test set has prompts)."""
HEADLINE: dict[str, str] = {"geneval": "correct", "ocr": "exact", "pickscore": "score"}
"""Each task's per-image score column whose prompt means the study compares (star/evaluation/stats.py)."""


@dataclass
class TaskReport:
    """metrics: named scalars over every image; images: (K·N, 3, H, W) in [0, 1], noise-major
    (the N prompts with noise 0, then noise 1, …); prompts: the K·N prompts; marks: K·N verdicts
    (None where a task has no pass/fail); rows: one dict per image with ``prompt_index``,
    ``noise``, ``tag`` and the task's per-image scores."""

    metrics: dict[str, float]
    images: torch.Tensor
    prompts: list[str]
    marks: list[bool] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    noises: int = 1


class _Scorer(Protocol):
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor: ...


def noise_seeds(count: int, cfg: EvalConfig) -> list[tuple[int, int, int]]:
    """(noise, prompt index, seed) of every image, noise-major."""
    return [(k, i, cfg.seed + k * NOISE_STRIDE + i) for k in range(cfg.noises) for i in range(count)]


def sample_records(pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig,
                   progress: bool = True) -> torch.Tensor:
    """``cfg.noises`` images per record, noise-major: (K·N, 3, H, W) in [0, 1]."""
    plan = noise_seeds(len(records), cfg)
    prompts = [records[i]["prompt"] for _, i, _ in plan]
    return sample_ode(pipe, prompts, [seed for *_, seed in plan], cfg.steps, cfg.guidance_scale, cfg.batch_size,
                      progress=progress)


def _rows(records: list[dict[str, Any]], cfg: EvalConfig, scores: list[dict[str, float]]) -> list[dict[str, Any]]:
    return [{"prompt_index": i, "noise": k, "tag": records[i].get("tag", ""), **score}
            for (k, i, _), score in zip(noise_seeds(len(records), cfg), scores, strict=True)]


def _repeat(records: list[dict[str, Any]], cfg: EvalConfig) -> list[dict[str, Any]]:
    return [records[i] for _, i, _ in noise_seeds(len(records), cfg)]


def evaluate_geneval(
    pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, reward: GenEvalReward,
    progress: bool = True
) -> TaskReport:
    """Strict GenEval: per-task accuracies and 'overall' (the mean of the task accuracies), over
    every (prompt, noise) image."""
    images = sample_records(pipe, records, cfg, progress)
    repeated = _repeat(records, cfg)
    correct = [r.correct for r in reward.evaluate(images, repeated)]
    summary = geneval_summary([r["tag"] for r in repeated], correct)
    rows = _rows(records, cfg, [{"correct": float(c)} for c in correct])
    return TaskReport({f"geneval_{k}": v for k, v in summary.items()}, images, [r["prompt"] for r in repeated],
                      correct, rows, cfg.noises)


def evaluate_ocr(pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, reward: Any,
                 progress: bool = True) -> TaskReport:
    """OCR: exact-match accuracy, mean normalised edit distance and mean reward."""
    images = sample_records(pipe, records, cfg, progress)
    prompts = [r["prompt"] for r in _repeat(records, cfg)]
    results = reward.evaluate(images, prompts)
    count = max(1, len(results))
    metrics = {
        "ocr_accuracy": sum(r.exact for r in results) / count,
        "ocr_edit_distance": sum(r.edit_distance_normalised for r in results) / count,
        "ocr_reward": sum(r.reward for r in results) / count,
    }
    rows = _rows(records, cfg, [{"exact": float(r.exact), "edit_distance": r.edit_distance_normalised,
                                 "reward": r.reward} for r in results])
    return TaskReport(metrics, images, prompts, [bool(r.exact) for r in results], rows, cfg.noises)


def evaluate_pickscore(pipe: StableDiffusion3Pipeline, records: list[dict[str, Any]], cfg: EvalConfig, reward: _Scorer,
                       progress: bool = True) -> TaskReport:
    """Preference: mean PickScore (logit-scale units) of the images for their prompts."""
    images = sample_records(pipe, records, cfg, progress)
    repeated = _repeat(records, cfg)
    prompts = [r["prompt"] for r in repeated]
    scores = reward.score(images, prompts, repeated)
    rows = _rows(records, cfg, [{"score": float(s)} for s in scores])
    return TaskReport({"pickscore_mean": scores.mean().item(), "pickscore_std": scores.std(unbiased=False).item()},
                      images, prompts, None, rows, cfg.noises)


TASK_EVALUATORS: dict[str, Callable[..., TaskReport]] = {
    "geneval": evaluate_geneval, "ocr": evaluate_ocr, "pickscore": evaluate_pickscore,
}
"""Each task's evaluation: ``(pipe, records, cfg, reward, progress) -> TaskReport``."""


def balanced_subset(records: list[dict[str, Any]], per_tag: int) -> list[dict[str, Any]]:
    """The first ``per_tag`` records of each tag, in file order (a fixed, balanced test subset)."""
    counts: dict[str, int] = {}
    subset = []
    for record in records:
        if counts.get(record["tag"], 0) < per_tag:
            counts[record["tag"]] = counts.get(record["tag"], 0) + 1
            subset.append(record)
    return subset
