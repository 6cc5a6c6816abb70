"""Diagnostics on a micro model: caption sensitivity, the commitment curve, reward variance per
step, and the signal-to-noise table of training gradients (star.diagnostics.gradient_snr)."""

import numpy as np
import pytest
import torch
from conftest import GENEVAL_RECORDS, MICRO, BrightnessReward, micro_pipeline

from star.config import load_config
from star.diagnostics.base_model import (
    caption_sensitivity,
    commitment_curve,
    noised,
    reward_variance_by_step,
)
from star.diagnostics.gradient_snr import cosine, gradient_table, objective_gradients
from star.models.lora import trainable_state
from star.models.sd3 import images_from_latents, latents_from_images
from star.rl.trainer import Trainer, build_objective
from star.world.prompts import colors_record, render_records


@pytest.fixture(scope="module")
def scenes():
    pipe = micro_pipeline()
    records = [colors_record("star", "red"), colors_record("circle", "blue")]
    size = pipe.vae.config.sample_size
    images = torch.from_numpy(render_records(records, size, np.random.default_rng(0))).permute(0, 3, 1, 2).float() / 255
    return pipe, images, [r["prompt"] for r in records]


def test_render_records_draws_each_record(scenes) -> None:
    _, images, _ = scenes
    assert images.shape[:2] == (2, 3) and not torch.equal(images[0], images[1])


def test_caption_sensitivity_is_zero_for_the_same_caption_and_positive_for_others(scenes) -> None:
    pipe, images, prompts = scenes
    table = caption_sensitivity(
        pipe, images, prompts, {"same": list(prompts), "empty": ["", ""]}, sigmas=[0.9, 0.5]
    )
    assert list(table) == [0.9, 0.5]
    for row in table.values():
        assert row["same"] == 0 and row["empty"] > 0 and row["x0_mse"] > 0
    with pytest.raises(ValueError, match="variant 'short' has 1 captions for 2 images"):
        caption_sensitivity(pipe, images, prompts, {"short": [""]}, sigmas=[0.5])


def test_noised_interpolates_with_a_seeded_noise() -> None:
    clean = torch.ones(1, 2, 3, 3)
    assert torch.equal(noised(clean, 0.0, seed=1), clean)
    assert torch.equal(noised(clean, 0.3, seed=1), noised(clean, 0.3, seed=1))
    assert not torch.equal(noised(clean, 0.3, seed=1), noised(clean, 0.3, seed=2))


def test_commitment_curve_starts_from_the_scene_at_low_noise(scenes) -> None:
    pipe, images, prompts = scenes
    target = images_from_latents(pipe.vae, latents_from_images(pipe.vae, images))

    def closeness(decoded: torch.Tensor) -> torch.Tensor:
        return -((decoded - target) ** 2).mean(dim=(1, 2, 3))

    curve = commitment_curve(pipe, images, prompts, closeness, steps=10, guidance_scale=2.0, start_steps=[0, 9])
    (high, from_noise), (low, from_scene) = curve
    assert high == pytest.approx(1.0) and 0 < low < 0.5
    # an untrained model cannot draw the scene from noise, but one small step keeps it
    assert from_scene > from_noise
    with pytest.raises(ValueError, match="start_steps must lie in"):
        commitment_curve(pipe, images, prompts, closeness, steps=10, guidance_scale=2.0, start_steps=[10])


@pytest.mark.slow
def test_reward_variance_is_largest_for_the_noise_of_the_first_step(scenes) -> None:
    pipe, _, prompts = scenes

    def brightness(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))

    kwargs = dict(steps=4, noise_level=0.7, guidance_scale=2.0, initial_noises=2, draws=4)
    table = reward_variance_by_step(pipe, prompts, [brightness] * 2, sde_steps=[None, 0, 3], **kwargs)
    assert list(table) == [None, 0, 3]
    # the first step's transition std is about 0.7, the last one's a few thousandths
    assert table[0] > 100 * table[3] > 0 and table[None] > 0
    assert reward_variance_by_step(pipe, prompts, [brightness] * 2, sde_steps=[0], **kwargs)[0] == table[0]
    with pytest.raises(ValueError, match="1 scorers for 2 prompts"):
        reward_variance_by_step(pipe, prompts, [brightness], sde_steps=[0], **kwargs)


class ConstantReward:
    name = "constant"

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> torch.Tensor:
        return torch.ones(len(images))


def _trainer(tmp_path, reward, allocation: str = "star") -> Trainer:
    train = {"group_size": 4, "steps": 3, "prompts_per_iteration": 2, "allocation": allocation, "train_fraction": 0.99}
    cfg = load_config(MICRO, overrides={"train": train})
    return Trainer(cfg, micro_pipeline(), reward, GENEVAL_RECORDS, tmp_path, progress=False)


def _objectives(trainer: Trainer) -> dict:
    train = trainer.train_cfg
    return {
        "none": build_objective(train.model_copy(update={"allocation": "none"}), 2),
        "uniform_region": build_objective(train.model_copy(update={"allocation": "uniform_region"}), 2),
        "star": build_objective(train.model_copy(update={"allocation": "star", "gamma": 4.0}), 2),
        "fdfo": build_objective(train.model_copy(update={"algorithm": "fdfo"}), 2),
    }


def test_objective_gradients_share_the_rollouts(tmp_path) -> None:
    trainer = _trainer(tmp_path, BrightnessReward())
    rollouts = trainer.sample(GENEVAL_RECORDS)
    rewards = trainer.score(rollouts)
    objectives = {k: v for k, v in _objectives(trainer).items() if k != "fdfo"}
    first = objective_gradients(trainer, rollouts, rewards, objectives, torch.Generator().manual_seed(0))
    again = objective_gradients(trainer, rollouts, rewards, objectives, torch.Generator().manual_seed(0))
    for name in objectives:
        torch.testing.assert_close(first[name][0], again[name][0])
        assert first[name][0].norm() > 0
    # at θ = θ_old the mean over regions of region means is the mean over elements (method §5)
    assert cosine(first["none"][0], first["uniform_region"][0]) == pytest.approx(1.0, abs=1e-5)
    assert cosine(first["none"][0], first["star"][0]) < 0.999
    assert all(p.grad is None for p in trainer.params)


@pytest.mark.slow
def test_gradient_table_measures_every_objective_against_the_reference(tmp_path) -> None:
    trainer = _trainer(tmp_path, BrightnessReward())
    before = trainable_state(trainer.transformer)
    train = trainer.train_cfg
    forward = {"nft": build_objective(train.model_copy(update={"algorithm": "nft", "allocation": "none"}), 2),
               "dgpo star": build_objective(train.model_copy(update={"algorithm": "dgpo"}), 2)}
    rows = gradient_table(trainer, GENEVAL_RECORDS, _objectives(trainer) | forward, "none", estimates=3, batches=1,
                          progress=False)
    by_name = {row.name: row for row in rows}
    assert list(by_name) == ["none", "uniform_region", "star", "fdfo", "nft", "dgpo star"]
    for row in rows:
        # ODE rollouts carry no log-probs: the forward-process rows have no cosine with none
        assert len(row.with_reference) == (0 if row.name in forward else 3), row.name
        assert len(row.pairwise) == 3 and min(row.norms) > 0, row.name
        assert all(-1 <= c < 0.999 for c in row.pairwise), (row.name, row.pairwise)
    assert by_name["none"].with_reference == [pytest.approx(1.0)] * 3
    assert by_name["uniform_region"].reference[0] == pytest.approx(1.0, abs=1e-4)
    assert -1 < by_name["fdfo"].reference[0] < 0.999  # against none's gradient on FDFO's paired rollouts
    mean, sem = by_name["star"].agreement
    assert mean == pytest.approx(sum(by_name["star"].pairwise) / 3) and sem > 0
    after = trainable_state(trainer.transformer)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no optimizer step
    assert trainer.objective.noise_share == "none"  # the trainer's own objective is back
    with pytest.raises(ValueError, match="at least two estimates"):
        gradient_table(trainer, GENEVAL_RECORDS, _objectives(trainer), "none", estimates=1)


@pytest.mark.slow
def test_gradient_table_is_zero_without_reward_spread(tmp_path) -> None:
    trainer = _trainer(tmp_path, ConstantReward(), allocation="none")
    objectives = {"none": _objectives(trainer)["none"]}
    (row,) = gradient_table(trainer, GENEVAL_RECORDS, objectives, "none", estimates=2, batches=1, progress=False)
    assert row.pairwise == [0.0] and row.norms == [0.0, 0.0] and row.rewards == [1.0, 1.0]
