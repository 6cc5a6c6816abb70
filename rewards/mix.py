"""A weighted mix of rewards, scored as one.

Mixing caveat: every component scores every image with the same ``metadata`` records, so a mix
applies only to prompts whose metadata serves all chosen rewards (e.g. geneval+ocr needs
records carrying GenEval's ``tag``/``include`` and the OCR ``text`` or a quoted prompt).
A record missing what one component needs fails in that component with its own error.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rewards.base import Box, Reward, can_locate, check_batch, score_and_locate


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
