"""Core-object coverage of the token grid and the localisation score (method §3.4), and the
GenEval reward's core boxes they are built from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewards.base import can_locate, score_and_locate
from rewards.geneval import GenEvalReward
from rewards.mix import WeightedReward
from star.method.regions import localisation, mean_localisation, token_coverage
from star.world.detector import detect
from star.world.render import ObjectSpec, Scene, render_array
from tests.conftest import BrightnessReward


def test_coverage_is_the_share_of_each_token_cell() -> None:
    coverage = token_coverage([[(0, 0, 10, 5)], [], [(15, 15, 20, 20), (0, 0, 5, 5)]], image_size=20, grid=2)
    torch.testing.assert_close(coverage[0], torch.tensor([0.5, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(coverage[1], torch.zeros(4))
    torch.testing.assert_close(coverage[2], torch.tensor([0.25, 0.0, 0.0, 0.25]))
    with pytest.raises(ValueError, match="multiple"):
        token_coverage([[]], image_size=21, grid=2)


def test_localisation_is_weight_share_over_area_share() -> None:
    coverage = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    maps = torch.tensor([[[4.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]] * 2])
    scores = localisation(maps, coverage)
    assert scores[0].tolist() == [4.0, 1.0]  # all weight on the object's quarter: 1 / (1/4)
    assert torch.isnan(scores[1]).all()  # no object found: no score
    assert mean_localisation(maps, coverage).tolist() == [4.0, 1.0]


def test_geneval_locates_the_core_objects_only() -> None:
    scene = Scene(
        (ObjectSpec("star", "red", (3, 3, 13, 13)), ObjectSpec("circle", "blue", (23, 23, 33, 33))), image_size=40
    )
    image = torch.from_numpy(render_array(scene)).permute(2, 0, 1)[None].float() / 255
    record = {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}],
              "prompt": "a photo of a red star"}
    reward = GenEvalReward(detect)
    scores, boxes = score_and_locate(reward, image, [record["prompt"]], [record])
    assert scores.tolist() == reward.score(image, [record["prompt"]], [record]).tolist()
    assert len(boxes[0]) == 1 and np.allclose(boxes[0][0], (3, 3, 13, 13), atol=1)  # the circle is not core
    mix = WeightedReward({"geneval": reward, "brightness": BrightnessReward()}, {"geneval": 1.0, "brightness": 0.5})
    mixed, mix_boxes = score_and_locate(mix, image, [record["prompt"]], [record])
    torch.testing.assert_close(mixed, mix.score(image, [record["prompt"]], [record]))
    assert mix_boxes == boxes


def test_rewards_that_cannot_locate_say_so() -> None:
    assert not can_locate(BrightnessReward())
    assert can_locate(GenEvalReward(detect))
    with pytest.raises(ValueError, match="'brightness' reward cannot locate"):
        score_and_locate(BrightnessReward(), torch.zeros(1, 3, 8, 8), ["x"], [{}])
    mix = WeightedReward({"b": BrightnessReward()}, {"b": 1.0})
    assert not can_locate(mix)
    with pytest.raises(ValueError, match="no reward of the mix"):
        score_and_locate(mix, torch.zeros(1, 3, 8, 8), ["x"], [{}])
