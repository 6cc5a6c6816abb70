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

    Rewards that can say where the prompt's content is implement ``score_and_locate`` (GenEval's
    detector, the OCR backend's text boxes; a mix through its components that can); the others
    raise a ValueError naming the reward.
    """
    locate = getattr(reward, "score_and_locate", None)
    if locate is None:
        raise ValueError(
            f"the {reward.name!r} reward cannot locate the prompt's core objects (GenEval's detector and the "
            "OCR reward can): the 'oracle' allocation and the localisation score need a reward that can"
        )
    return locate(images, prompts, metadata)


def can_locate(reward: Reward) -> bool:
    """Whether ``score_and_locate`` works for ``reward``."""
    can = getattr(reward, "can_locate", None)
    return bool(can()) if callable(can) else hasattr(reward, "score_and_locate")


IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""The one image contract of every reward: (B, 3, H, W) floats of these dtypes, finite, in [0, 1]."""


def check_images(images: torch.Tensor) -> None:
    """Reject anything but (B, 3, H, W) float32/float16/bfloat16 images with finite values in
    [0, 1], naming what was found: a uint8 or [-1, 1] batch would otherwise be clamped into a
    wrong picture and scored without a word."""
    expected = "expected (B, 3, H, W) float32/float16/bfloat16 images with values in [0, 1]"
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images of shape {shape}: {expected}")
    if images.dtype not in IMAGE_DTYPES:
        hint = " (uint8 0-255 images: divide by 255)" if not images.is_floating_point() else ""
        raise ValueError(f"images of dtype {images.dtype}{hint}: {expected}")
    if images.numel() == 0:
        return
    finite = torch.isfinite(images)
    if not finite.all():
        nan = int(torch.isnan(images).sum())
        raise ValueError(f"images contain {nan} NaN and {int((~finite).sum()) - nan} infinite values: {expected}")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        hint = (" (looks like [-1, 1]: use (x + 1) / 2)" if low >= -1 and high <= 1
                else " (looks like 0-255: divide by 255)" if low >= 0 and high <= 255 else "")
        raise ValueError(f"images have values in [{low:.3g}, {high:.3g}]{hint}: {expected}")


def check_batch(images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> None:
    """Clear errors for malformed batches before any backend sees them (``check_images``)."""
    check_images(images)
    if not len(images) == len(prompts) == len(metadata):
        raise ValueError(f"batch sizes differ: {len(images)} images, {len(prompts)} prompts, {len(metadata)} metadata")


def to_uint8_arrays(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) floats in [0, 1], already checked by ``check_batch`` -> B arrays (H, W, 3) uint8."""
    arrays = (images.detach().float() * 255).round().to(torch.uint8)
    return list(arrays.permute(0, 2, 3, 1).cpu().numpy())
