"""Builds the configured reward: the task's own, or a weighted mix of several.

Backends are imported inside their branch, so a run only loads (and needs) what it uses.

Mixing caveat: every component scores every image with the same ``metadata`` records, so a mix
applies only to prompts whose metadata serves all chosen rewards (e.g. geneval+ocr needs
records carrying GenEval's ``tag``/``include`` and the OCR ``text`` or a quoted prompt).
A record missing what one component needs fails in that component with its own error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rewards.base import Box, Reward, can_locate, check_batch, score_and_locate
from star.config import RewardsConfig


class WeightedReward:
    """``score`` = sum over components of ``weights[name] * reward.score`` (all on the CPU).

    Args:
        rewards: component rewards by name.
        weights: one finite weight per component (same names).
    """

    name = "mix"

    def __init__(self, rewards: dict[str, Reward], weights: dict[str, float]) -> None:
        if not rewards:
            raise ValueError("a reward mix needs at least one component")
        if set(rewards) != set(weights):
            raise ValueError(f"mix weights {sorted(weights)} do not match its rewards {sorted(rewards)}")
        bad = {name: w for name, w in weights.items() if not math.isfinite(w)}
        if bad:
            raise ValueError(f"mix weights must be finite, got {bad}")
        self.rewards = rewards
        self.weights = weights

    def score_components(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor]:
        """Each component's unweighted (B,) float32 CPU scores, by name; images (B, 3, H, W)."""
        check_batch(images, prompts, metadata)
        return {name: reward.score(images, prompts, metadata).float().cpu() for name, reward in self.rewards.items()}

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        """(B,) float32 weighted sum of the components for images (B, 3, H, W) in [0, 1]."""
        components = self.score_components(images, prompts, metadata)
        return sum((self.weights[name] * values for name, values in components.items()), torch.zeros(len(images)))


    def can_locate(self) -> bool:
        return any(can_locate(reward) for reward in self.rewards.values())

    def score_and_locate(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, list[list[Box]]]:
        """The weighted score and the union of the boxes of every component that can locate."""
        check_batch(images, prompts, metadata)
        boxes: list[list[Box]] = [[] for _ in range(len(images))]
        total = torch.zeros(len(images))
        if not self.can_locate():
            raise ValueError(f"no reward of the mix {sorted(self.rewards)} can locate the prompt's core objects")
        for name, reward in self.rewards.items():
            if can_locate(reward):
                values, found = score_and_locate(reward, images, prompts, metadata)
                boxes = [mine + theirs for mine, theirs in zip(boxes, found)]
            else:
                values = reward.score(images, prompts, metadata)
            total = total + self.weights[name] * values.float().cpu()
        return total, boxes


def score_components(
    reward: Reward, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
) -> dict[str, torch.Tensor]:
    """Per-component (B,) scores of any reward: a mix's components, else ``{reward.name: score}``."""
    if isinstance(reward, WeightedReward):
        return reward.score_components(images, prompts, metadata)
    return {reward.name: reward.score(images, prompts, metadata).float().cpu()}


def _build_one(name: str, cfg: RewardsConfig, reward_models_dir: Path) -> Reward:
    """One reward by name, its backend chosen by ``cfg``."""
    if name == "geneval":
        from rewards.geneval import GenEvalReward, world_detector

        if cfg.geneval_detector == "world":
            from star.world.vocab import SHAPES

            return GenEvalReward(world_detector(), cfg.geneval_partial_credit, classes=SHAPES)
        from rewards.mask2former import mask2former_detector

        detector = mask2former_detector(cfg.detector_model, cfg.color_model, cfg.device)
        return GenEvalReward(detector, partial_credit=cfg.geneval_partial_credit)
    if name == "ocr":
        from rewards.ocr import OcrReward

        return OcrReward(cfg.ocr_backend, cfg.easyocr_model_dir)
    if name == "pickscore":
        from rewards.pickscore import PickScoreReward

        model: str | Path = reward_models_dir / "world_clip"  # the embedded stand-in holds both
        processor: str | Path = model
        hint = "build it with `dvc repro reward_models` or fetch it with `dvc pull models/rewards`"
        if cfg.pickscore_source == "pretrained":
            model, processor, hint = cfg.pickscore_model, cfg.pickscore_processor, None
        return PickScoreReward(model, processor, device=cfg.device, missing_hint=hint)
    raise ValueError(f"unknown reward {name!r}; expected 'geneval', 'ocr' or 'pickscore'")


def build_reward(cfg: RewardsConfig, reward_models_dir: Path) -> Reward:
    """The task's reward, or a ``WeightedReward`` over ``cfg.weights`` when that is set.

    ``reward_models_dir`` is ``PathsConfig.reward_models`` (holds the embedded world CLIP).
    """
    if cfg.weights is None:
        return _build_one(cfg.task, cfg, reward_models_dir)
    if not cfg.weights:
        raise ValueError("rewards.weights is an empty mapping; use null for the task's own reward")
    rewards = {name: _build_one(name, cfg, reward_models_dir) for name in cfg.weights}
    return WeightedReward(rewards, dict(cfg.weights))
