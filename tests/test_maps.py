"""Captured maps of a model and their localisation on the core objects (star/diagnostics/maps.py)."""

from __future__ import annotations

import pytest
import torch

from star.config import load_config
from star.diagnostics.maps import capture_maps, localisation_rows, model_allocation_maps
from star.method.allocation import AllocationParams
from tests.conftest import GENEVAL_RECORDS, MICRO, BrightnessReward, micro_pipeline


class CornerReward(BrightnessReward):
    def score_and_locate(self, images, prompts, metadata):  # noqa: ANN001, ANN201
        side = images.shape[-1]
        return self.score(images, prompts, metadata), [[(0, 0, side // 2, side // 2)] for _ in images]


def test_capture_settings_see_the_same_images_and_are_scored() -> None:
    pipe = micro_pipeline()
    train = load_config(MICRO).train.model_copy(update={"steps": 3})
    default = capture_maps(pipe, GENEVAL_RECORDS, train, seed=3, reward=CornerReward())
    clip_only = capture_maps(pipe, GENEVAL_RECORDS,
                             train.model_copy(update={"core_segments": "clip", "capture_blocks": [0]}), 3,
                             CornerReward())
    torch.testing.assert_close(default.images, clip_only.images)  # the capture never changes the samples
    assert not torch.allclose(default.attention, clip_only.attention)
    assert default.coverage.shape == (2, default.attention.shape[-1]) and default.coverage.sum() > 0
    rows = localisation_rows(default, {"raw": AllocationParams(1.0, 1.0, 0.0, 1e9), "sharp": AllocationParams(4.0)})
    assert [r.name for r in rows] == ["raw", "sharp"] and rows[0].images == 2
    assert len(rows[0].mean) == 3 and all(m > 0 for m in rows[0].mean)
    without = capture_maps(pipe, GENEVAL_RECORDS, train, seed=3, reward=BrightnessReward())
    assert without.coverage is None
    with pytest.raises(ValueError, match="coverage"):
        localisation_rows(without, {"raw": AllocationParams()})


def test_model_allocation_maps_of_the_oracle_localise_by_construction() -> None:
    pipe = micro_pipeline()
    train = load_config(MICRO).train.model_copy(update={"steps": 3, "allocation": "oracle"})
    images, weights, scores = model_allocation_maps(pipe, GENEVAL_RECORDS, train, seed=3, reward=CornerReward())
    assert images.shape[0] == 2 and weights.shape[:2] == (2, 3)
    assert (scores > 3.0).all()  # a quarter of the grid: at most 4, the clamp at w_max = 4
