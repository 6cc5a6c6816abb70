"""The interface every reward implements."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


class Reward(Protocol):
    """``score(images, prompts, metadata) -> (B,) tensor``; images are (B, 3, H, W) in [0, 1]."""

    name: str

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor: ...


Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels, y downwards."""


def score_and_locate(
    reward: Reward, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
) -> tuple[torch.Tensor, list[list[Box]]]:
    """(B,) scores and each image's core-object boxes as the reward's own detector finds them.

    Rewards that can say where the prompt's content is implement ``score_and_locate`` (GenEval;
    a mix through its components that can); the others raise a ValueError naming the reward.
    """
    locate = getattr(reward, "score_and_locate", None)
    if locate is None:
        raise ValueError(
            f"the {reward.name!r} reward cannot locate the prompt's core objects (only GenEval's detector "
            "can): the 'oracle' allocation and the localisation score need a reward that can"
        )
    return locate(images, prompts, metadata)


def can_locate(reward: Reward) -> bool:
    """Whether ``score_and_locate`` works for ``reward``."""
    can = getattr(reward, "can_locate", None)
    return bool(can()) if callable(can) else hasattr(reward, "score_and_locate")


def check_batch(images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> None:
    """Clear errors for malformed batches before any backend sees them."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a (B, 3, H, W) tensor in [0, 1], got {shape}")
    if not len(images) == len(prompts) == len(metadata):
        raise ValueError(f"batch sizes differ: {len(images)} images, {len(prompts)} prompts, {len(metadata)} metadata")
    if torch.isnan(images).any():
        raise ValueError("images contain NaN pixels")


def to_uint8_arrays(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) floats in [0, 1] -> B arrays (H, W, 3) uint8."""
    arrays = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return list(arrays.permute(0, 2, 3, 1).cpu().numpy())
