"""Where the core objects are: the token grid's coverage by the boxes a reward's detector finds
in the final image, and how much of an allocation map lies on them (docs/method.md §3.4).

The ``oracle`` allocation is built from this coverage, and the localisation score measures any
map against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels, y downwards, x1/y1 exclusive."""


def token_coverage(boxes: Sequence[Sequence[Box]], image_size: int, grid: int) -> torch.Tensor:
    """(B, P) share of each of the P = grid² token cells (row-major, the transformer's token
    order) covered by the union of an image's ``boxes``; all zeros for an image without any."""
    if image_size % grid:
        raise ValueError(f"image side {image_size} is not a multiple of the {grid}x{grid} token grid")
    masks = torch.zeros(len(boxes), 1, image_size, image_size)
    for index, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes:
            left, top = max(0, int(round(x0))), max(0, int(round(y0)))
            right, bottom = min(image_size, int(round(x1))), min(image_size, int(round(y1)))
            masks[index, 0, top:bottom, left:right] = 1.0
    return F.avg_pool2d(masks, image_size // grid).flatten(1)


def localisation(maps: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Share of each map's weight on the core objects divided by their area share (1: no
    localisation; P / |objects| at most). maps: (B, T, P) non-negative; coverage: (B, P).
    Returns (B, T); NaN for images where the detector found no core object."""
    weight_share = (maps * coverage[:, None]).sum(-1) / maps.sum(-1).clamp_min(1e-12)
    area_share = coverage.mean(-1, keepdim=True)
    return torch.where(area_share > 0, weight_share / area_share.clamp_min(1e-12),
                       torch.full_like(weight_share, float("nan")))


def mean_localisation(maps: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Per step, the mean localisation over the images with a core object: (B, T, P) -> (T,)
    (NaN where no image has one)."""
    scores = localisation(maps, coverage)
    return scores.nanmean(dim=0)
