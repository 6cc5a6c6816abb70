"""Token grounding in base pretraining (docs/method.md §0, Grounding): the share of the core
tokens' attention that lands on the objects' token cells, pushed towards 1 by TokenCompose's
token loss (arXiv 2312.03626), so that the embedded base has the property STAR assumes of
SD3.5-M: its text→image attention on the prompt's core content finds the regions that carry it.

The attention is what STAR's capture reads (``star.method.attention``): for every image token,
the softmax over the text keys summed over the core tokens, averaged over heads and the capture
blocks. The mask is the union of the caption's objects (and its sign), as STAR's maps weigh the
core content as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from star.method.core_content import core_token_mask, text_segments
from star.method.regions import Box, token_coverage


@dataclass
class GroundingTargets:
    """Per training image: ``core`` (N, L_text), 1 on the caption's core tokens in the joint text
    sequence (CLIP then T5); ``objects`` (N, P), 1 on the token cells its objects touch."""

    core: torch.Tensor
    objects: torch.Tensor


def grounding_targets(
    pipe: Any,
    captions: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    boxes: Sequence[Sequence[Box]],
    image_size: int,
    grid: int,
) -> GroundingTargets:
    """The targets of ``captions`` (their ``records`` name the core words, method §3.1) and the
    ``boxes`` of their scenes, on a ``grid`` × ``grid`` token grid of ``image_size`` px images."""
    core = core_token_mask(text_segments(pipe, "both"), captions, records)
    objects = (token_coverage(boxes, image_size, grid) > 0).float()
    return GroundingTargets(core, objects)


def grounding_loss(attention: torch.Tensor, objects: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L = mean_i (1 − Σ_u A_i(u) M_i(u) / Σ_u A_i(u))² over the images that have core tokens and
    objects, and the mean share itself (detached), for logging.

    attention: (B, P) core-token attention mass of each image token, A; objects: (B, P) mask M.
    """
    total = attention.sum(-1)
    valid = (total > 0) & (objects.sum(-1) > 0)
    if not valid.any():
        zero = attention.sum() * 0.0
        return zero, zero.detach()
    share = (attention * objects).sum(-1)[valid] / total[valid]
    return ((1 - share) ** 2).mean(), share.mean().detach()
