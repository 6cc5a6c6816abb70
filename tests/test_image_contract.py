"""One image contract for every reward (rewards/base.py ``check_images``): (B, 3, H, W)
float32/float16/bfloat16, finite, in [0, 1]. Anything else is refused with a message naming what
was found, never clamped into a different picture and scored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from rewards.geneval import GenEvalReward
from rewards.mix import WeightedReward
from rewards.ocr import OcrReward
from rewards.pickscore import PickScoreReward
from star.world.detector import detect
from star.world.prompts import colors_record
from star.world.render import ObjectSpec, Scene, fitted_side, render_array
from tests.test_pickscore import tiny_clip_dir  # noqa: F401  (the fixture)


def _red_star_with_sign() -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
    """A 64 px red star above a sign reading "AB", as float32 in [0, 1]."""
    side = fitted_side("star", 14)
    scene = Scene((ObjectSpec("star", "red", (4, 4, 4 + side, 4 + side)),), "AB", 64, sign_box=(4, 32, 60, 60))
    record = {**colors_record("star", "red"), "text": "AB"}
    image = torch.from_numpy(render_array(scene)).permute(2, 0, 1).float() / 255
    return image[None], [record["prompt"]], [record]


REWARDS: dict[str, Callable[[Path], Any]] = {
    "geneval": lambda clip: GenEvalReward(detect),
    "ocr": lambda clip: OcrReward("rapidocr"),
    "pickscore": lambda clip: PickScoreReward(clip, clip),
    "mix": lambda clip: WeightedReward({"geneval": GenEvalReward(detect), "ocr": OcrReward("rapidocr")},
                                       {"geneval": 1.0, "ocr": 1.0}),
}

BAD = {  # name -> (transform of a valid float32 batch, what the message must name)
    "uint8 0-255": (lambda x: (x * 255).round().to(torch.uint8),
                    r"dtype torch\.uint8 \(uint8 0-255 images: divide by 255\)"),
    "int64 0-255": (lambda x: (x * 255).round().long(), r"dtype torch\.int64"),
    "float 0-255": (lambda x: x * 255, r"values in \[\d.*\] \(looks like 0-255: divide by 255\)"),
    "[-1, 1]": (lambda x: x * 2 - 1, r"values in \[-0\.\d+, 0\.\d+\] \(looks like \[-1, 1\]: use \(x \+ 1\) / 2\)"),
    "+inf": (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("inf"))), r"0 NaN and \d+ infinite"),
    "NaN": (lambda x: torch.full_like(x, float("nan")), r"\d+ NaN and 0 infinite"),
    "float64": (lambda x: x.double(), r"dtype torch\.float64"),
    "one channel": (lambda x: x[:, :1], r"shape \(1, 1, 64, 64\)"),
    "no batch axis": (lambda x: x[0], r"shape \(3, 64, 64\)"),
}


@pytest.mark.parametrize("reward_name", sorted(REWARDS))
@pytest.mark.parametrize("case", sorted(BAD))
def test_every_reward_refuses_images_outside_the_contract(
    reward_name: str, case: str, tiny_clip_dir: Path  # noqa: F811
) -> None:
    images, prompts, metadata = _red_star_with_sign()
    transform, message = BAD[case]
    reward = REWARDS[reward_name](tiny_clip_dir)
    with pytest.raises(ValueError, match=message) as refused:
        reward.score(transform(images), prompts, metadata)
    assert "expected (B, 3, H, W) float32/float16/bfloat16 images with values in [0, 1]" in str(refused.value)


def test_the_valid_picture_scores_and_half_precision_scores_the_same() -> None:
    """The batch the refusals start from is a right picture: GenEval and OCR read it (1.0), and
    float16 or bfloat16 copies are accepted and score the same."""
    images, prompts, metadata = _red_star_with_sign()
    for reward in (GenEvalReward(detect), OcrReward("rapidocr")):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            assert reward.score(images.to(dtype), prompts, metadata).tolist() == [1.0], (reward, dtype)
