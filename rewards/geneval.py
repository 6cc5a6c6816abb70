"""GenEval reward: a detector backend plus the official rules (strict or partial credit)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch

from rewards.base import check_batch, to_uint8_arrays
from rewards.detection import Detection
from rewards.geneval_rules import Box, GenEvalResult, evaluate_image

Detector = Callable[[np.ndarray], list[Detection]]
"""Maps one (H, W, 3) uint8 image to its detections."""


class GenEvalReward:
    """``score`` returns 1/0 correctness (strict) or Flow-GRPO's partial credit per image."""

    name = "geneval"

    def __init__(self, detector: Detector, partial_credit: bool = True, classes: Collection[str] | None = None) -> None:
        """``classes``: every class the detector can find, when it is a closed set (the world's
        shapes); a prompt asking for another class is an error, not a silent 0."""
        self.detector = detector
        self.partial_credit = partial_credit
        self.classes = frozenset(classes) if classes is not None else None

    def evaluate(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[GenEvalResult]:
        """Per-image results; images (B, 3, H, W) in [0, 1]."""
        check_batch(images, [str(record.get("prompt", "")) for record in metadata], metadata)
        return self._evaluate(images, metadata)

    def _evaluate(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[GenEvalResult]:
        """``evaluate`` of a batch that ``check_batch`` has accepted."""
        for index, record in enumerate(metadata):
            if "include" not in record or "tag" not in record:
                raise ValueError(f"metadata[{index}] is not GenEval metadata (needs 'tag' and 'include'): {record}")
            unknown = {c["class"] for c in record["include"]} - self.classes if self.classes is not None else set()
            if unknown:
                raise ValueError(
                    f"metadata[{index}] ({record.get('prompt')!r}) asks for {sorted(unknown)}, which this "
                    f"detector cannot find (it knows {sorted(self.classes or [])}); for COCO classes set "
                    "rewards.geneval_detector: mask2former"
                )
        arrays = to_uint8_arrays(images)
        batched = getattr(self.detector, "detect_batch", None)  # batched backends (Mask2Former) run faster
        detections = batched(arrays) if batched is not None else [self.detector(image) for image in arrays]
        return [evaluate_image(found, record) for found, record in zip(detections, metadata)]

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        return self.score_and_locate(images, prompts, metadata)[0]

    def score_and_locate(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, list[list[Box]]]:
        """(B,) scores and, per image, the boxes of its core objects (one detection pass)."""
        check_batch(images, prompts, metadata)
        results = self._evaluate(images, metadata)
        values = [r.partial if self.partial_credit else float(r.correct) for r in results]
        return torch.tensor(values, dtype=torch.float32), [r.core_boxes for r in results]
