"""build_reward: single rewards, weighted mixes, and invalid reward configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rewards.geneval import GenEvalReward
from rewards.mix import WeightedReward, score_components
from rewards.ocr import EasyOcrBackend, OcrReward, RapidOcrBackend
from star.config import ConfigError, RewardsConfig, config_from_dict
from star.scoring import build_reward
from star.world.detector import detect
from star.world.prompts import colors_record
from star.world.render import ObjectSpec, Scene, fitted_side, render_array

MODELS = Path("models/rewards")


def _mixed_batch() -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
    """Four 64 px images, each a shape above a sign; metadata serves GenEval and OCR alike.

    The second image paints its square green where the prompt asks for blue (GenEval < 1).
    """
    cases = [("circle", "red", "red", "AB"), ("square", "blue", "green", "K7"), ("star", "yellow", "yellow", "Q8Z")]
    cases.append(("cross", "purple", "purple", "W0M8"))
    arrays, metadata = [], []
    for shape, asked, painted, text in cases:
        side = fitted_side(shape, 14)
        scene = Scene((ObjectSpec(shape, painted, (4, 4, 4 + side, 4 + side)),), text, 64, sign_box=(4, 32, 60, 60))
        arrays.append(render_array(scene))
        metadata.append({**colors_record(shape, asked), "text": text})
    images = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    return images, [m["prompt"] for m in metadata], metadata


def test_geneval_world_reward() -> None:
    reward = build_reward(RewardsConfig(task="geneval", geneval_partial_credit=False), MODELS)
    assert isinstance(reward, GenEvalReward) and not reward.partial_credit
    images, prompts, metadata = _mixed_batch()
    assert reward.score(images, prompts, metadata).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_ocr_reward_backends() -> None:
    reward = build_reward(RewardsConfig(task="ocr"), MODELS)
    assert isinstance(reward, OcrReward) and isinstance(reward.backend, RapidOcrBackend)
    easy = build_reward(RewardsConfig(task="ocr", ocr_backend="easyocr", easyocr_model_dir=Path("w")), MODELS)
    assert isinstance(easy.backend, EasyOcrBackend) and easy.backend.model_dir == Path("w")


def test_pickscore_embedded_points_at_world_clip() -> None:
    reward = build_reward(RewardsConfig(task="pickscore"), Path("somewhere"))
    assert (reward.model_name, reward.processor_name) == (str(Path("somewhere/world_clip")),) * 2
    cfg = RewardsConfig(task="pickscore", pickscore_source="pretrained", pickscore_model="m", pickscore_processor="p")
    reward = build_reward(cfg, MODELS)
    assert (reward.model_name, reward.processor_name) == ("m", "p")


@pytest.mark.slow
def test_mix_is_the_weighted_sum_of_its_components() -> None:
    images, prompts, metadata = _mixed_batch()
    mix = build_reward(RewardsConfig(task="geneval", weights={"geneval": 1.0, "ocr": 0.5}), MODELS)
    assert isinstance(mix, WeightedReward) and mix.name == "mix"
    components = mix.score_components(images, prompts, metadata)
    geneval = build_reward(RewardsConfig(task="geneval"), MODELS).score(images, prompts, metadata)
    ocr = build_reward(RewardsConfig(task="ocr"), MODELS).score(images, prompts, metadata)
    torch.testing.assert_close(components["geneval"], geneval)
    torch.testing.assert_close(components["ocr"], ocr)
    torch.testing.assert_close(mix.score(images, prompts, metadata), geneval + 0.5 * ocr)
    assert geneval[1] < 1.0 and ocr.max() == 1.0  # both components vary, so the sum is informative


def test_score_components_of_a_single_reward() -> None:
    images, prompts, metadata = _mixed_batch()
    reward = build_reward(RewardsConfig(task="geneval"), MODELS)
    parts = score_components(reward, images, prompts, metadata)
    assert list(parts) == ["geneval"]
    torch.testing.assert_close(parts["geneval"], reward.score(images, prompts, metadata))


def test_mix_checks_its_arguments() -> None:
    reward = build_reward(RewardsConfig(task="geneval"), MODELS)
    with pytest.raises(ValueError, match="do not match"):
        WeightedReward({"geneval": reward}, {"ocr": 1.0})
    with pytest.raises(ValueError, match="finite"):
        WeightedReward({"geneval": reward}, {"geneval": float("nan")})
    with pytest.raises(ValueError, match="empty mapping"):
        build_reward(RewardsConfig(weights={}), MODELS)


def test_mix_with_metadata_one_component_cannot_use_fails() -> None:
    images, prompts, _ = _mixed_batch()
    mix = build_reward(RewardsConfig(weights={"geneval": 1.0, "ocr": 1.0}), MODELS)
    ocr_only = [{"tag": "ocr", "text": "AB"}] * len(prompts)
    with pytest.raises(ValueError, match="not GenEval metadata"):
        mix.score(images, prompts, ocr_only)


@pytest.mark.parametrize(
    ("rewards", "key"),
    [
        ({"task": "clip"}, "rewards.task"),
        ({"weights": {"aesthetic": 1.0}}, "rewards.weights.aesthetic"),
        ({"weights": {"ocr": "heavy"}}, "rewards.weights.ocr"),
        ({"ocr_backend": "tesseract"}, "rewards.ocr_backend"),
        ({"geneval_detector": "yolo"}, "rewards.geneval_detector"),
        ({"pickscore_source": "hub"}, "rewards.pickscore_source"),
        ({"ocr_model": "x"}, "rewards.ocr_model"),
    ],
)
def test_invalid_reward_config_fails_at_load(rewards: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({"rewards": rewards})


def test_default_config_builds_the_geneval_reward() -> None:
    cfg = config_from_dict({})
    assert isinstance(build_reward(cfg.rewards, cfg.paths.reward_models), GenEvalReward)


def test_world_geneval_reward_bad_input_is_named() -> None:
    """The world GenEval reward: clear errors for malformed batches, an empty batch scores empty."""
    reward = GenEvalReward(detect)
    record = {"prompt": "a photo of a star", "tag": "single_object", "include": [{"class": "star", "count": 1}]}
    grey = torch.full((1, 3, 32, 32), 0.5)
    assert reward.score(grey, [record["prompt"]], [record]).tolist() == [0.0]
    assert reward.score(torch.zeros(0, 3, 32, 32), [], []).shape == (0,)
    with pytest.raises(ValueError, match=r"metadata\[0\] is not GenEval metadata"):
        reward.score(grey, ["a photo of a star"], [{"prompt": "a photo of a star"}])
    with pytest.raises(ValueError, match="NaN"):
        reward.score(torch.full((1, 3, 32, 32), float("nan")), [record["prompt"]], [record])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reward.score(torch.zeros(1, 1, 32, 32), [record["prompt"]], [record])
    with pytest.raises(ValueError, match="batch sizes differ"):
        reward.score(grey, [], [record])
