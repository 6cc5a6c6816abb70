"""The detection record every GenEval detector backend produces and the rules consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object in one image.

    Attributes:
        class_name: object class (a world shape, or a COCO class name for real detectors).
        box: ``(x0, y0, x1, y1)`` in pixels, x to the right and y downwards.
        score: detector confidence in [0, 1].
        color: colour name decided by the backend (one of the ten GenEval colours), or None
            when the backend does not classify colour.
        mask: optional boolean mask, shape ``(H, W)``, of the object's pixels.
    """

    class_name: str
    box: tuple[float, float, float, float]
    score: float
    color: str | None = None
    mask: np.ndarray | None = None
