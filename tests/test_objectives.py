"""Objectives (method §4–§6) on real rollouts of the micro model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from star.config import load_config
from star.method.allocation import AllocationParams
from star.rl.objectives import FdfoObjective, PolicyGradientObjective, Targets
from star.rl.trainer import Trainer
from tests.conftest import GENEVAL_RECORDS, MICRO, BrightnessReward, micro_pipeline

TRAIN = {"prompts_per_iteration": 2, "group_size": 2, "steps": 3, "minibatch_size": 4, "kl_beta": 0.04}


@pytest.fixture()
def trainer(tmp_path: Path) -> Trainer:
    cfg = load_config(MICRO, overrides={"train": TRAIN})
    return Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path, progress=False)


def _perturb_lora(trainer: Trainer) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in trainer.transformer.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def _flow_grpo_loss(trainer: Trainer, rollouts, advantages: torch.Tensor, t: int, clip: float,
                    beta: float) -> torch.Tensor:
    """Flow-GRPO's image-level loss written out independently of star.rl.objectives."""
    x, x_next, sig = rollouts.latents[:, t], rollouts.latents[:, t + 1], rollouts.sigmas
    s, dt = sig[t], sig[t + 1] - sig[t]
    s_hat = sig[1] if s == 1 else s  # only the denominator (Flow-GRPO's sd3_sde_with_logprob.py)
    sigma_t = 0.7 * torch.sqrt(s / (1 - s_hat))

    def mean_of(v: torch.Tensor) -> torch.Tensor:
        return x * (1 + sigma_t**2 / (2 * s) * dt) + v * (1 + sigma_t**2 * (1 - s) / (2 * s)) * dt

    mean = mean_of(trainer.policy.velocity(x, s, rollouts.cond))
    std = (sigma_t * torch.sqrt(-dt)).expand_as(mean)
    log_prob = torch.distributions.Normal(mean, std).log_prob(x_next).mean(dim=(1, 2, 3))
    ratio = torch.exp(log_prob - rollouts.log_probs[:, t].mean(dim=(1, 2, 3)))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    ref_mean = mean_of(trainer.policy.reference_velocity(x, s, rollouts.cond))
    kl = ((mean - ref_mean) ** 2).mean(dim=(1, 2, 3)) / (2 * sigma_t**2)
    return torch.mean(torch.maximum(unclipped, clipped)) + beta * kl.mean()


def test_none_equals_flow_grpo_loss(trainer: Trainer) -> None:
    rollouts = trainer.sample(GENEVAL_RECORDS)
    _perturb_lora(trainer)  # θ ≠ θ_old ≠ θ_ref, so ratio, clip and KL all matter
    objective = PolicyGradientObjective("none", AllocationParams(), 2, clip_range=0.2, kl_beta=0.04, global_std=False)
    rewards = torch.tensor([0.1, 0.7, 0.4, 0.2])
    targets = objective.prepare(rollouts, rewards)
    for t in range(3):
        loss, _ = objective.step_loss(trainer.policy, rollouts, targets, t)
        expected = _flow_grpo_loss(trainer, rollouts, targets.advantages, t, 0.2, 0.04)
        # The loss is a sum of O(1) terms −A·ratio that cancel (advantages sum to zero per group):
        # float32 leaves ~1e-7 absolute error on a ~1e-3 result; a real mismatch is >= 1e-4.
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def _grads(trainer: Trainer, objective, rollouts, targets: Targets, t: int) -> torch.Tensor:
    trainer.optimizer.zero_grad()
    loss, _ = objective.step_loss(trainer.policy, rollouts, targets, t)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in trainer.params])


@pytest.mark.slow
def test_uniform_region_gradient_equals_none_at_the_sampling_policy(trainer: Trainer) -> None:
    """At θ = θ_old, β = 0: the mean over regions of region means is the mean over elements,
    so ∇L_uniform_region = ∇L_none (method §5), with the same clip range."""
    with torch.no_grad():  # a non-zero LoRA B so the adapter gradients are not all zero
        for name, p in trainer.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(5))
    rollouts = trainer.sample(GENEVAL_RECORDS)  # θ_old = θ
    common = dict(allocation=AllocationParams(), patch_size=2, clip_range=1e-4, kl_beta=0.0)
    none, uniform = PolicyGradientObjective("none", **common), PolicyGradientObjective("uniform_region", **common)
    rewards = torch.tensor([0.1, 0.7, 0.4, 0.2])
    for t in range(2):
        g_none = _grads(trainer, none, rollouts, none.prepare(rollouts, rewards), t)
        g_uniform = _grads(trainer, uniform, rollouts, uniform.prepare(rollouts, rewards), t)
        assert g_none.abs().max() > 0
        torch.testing.assert_close(g_uniform, g_none, rtol=1e-4, atol=1e-7)


def test_region_ratio_clips_like_the_image_ratio(trainer: Trainer) -> None:
    """Off-policy, the per-region log-ratio is a mean over the region's elements, so its clip
    fraction at one ε is of the same order as the image ratio's (a sum would clip ~E/P× sooner)."""
    rollouts = trainer.sample(GENEVAL_RECORDS)
    _perturb_lora(trainer)
    common = dict(allocation=AllocationParams(), patch_size=2, clip_range=0.02, kl_beta=0.0)
    rewards = torch.tensor([0.1, 0.7, 0.4, 0.2])
    stats = {}
    for mode in ("none", "uniform_region"):
        objective = PolicyGradientObjective(mode, **common)
        _, stats[mode] = objective.step_loss(trainer.policy, rollouts, objective.prepare(rollouts, rewards), 1)
    image, region = float(stats["none"]["approx_kl"]), float(stats["uniform_region"]["approx_kl"])
    assert 0 < image and 0 < region < 50 * image, (image, region)


def test_star_with_uniform_attention_equals_uniform_region(trainer: Trainer) -> None:
    rollouts = trainer.sample(GENEVAL_RECORDS)
    _perturb_lora(trainer)
    common = dict(allocation=AllocationParams(), patch_size=2, clip_range=1e-4, kl_beta=0.04)
    rewards = torch.tensor([0.1, 0.7, 0.4, 0.2])
    rollouts.attention = torch.ones(4, 3, rollouts.latents.shape[-1] ** 2 // 4)
    star, uniform = PolicyGradientObjective("star", **common), PolicyGradientObjective("uniform_region", **common)
    loss_star, _ = star.step_loss(trainer.policy, rollouts, star.prepare(rollouts, rewards), 1)
    loss_uniform, _ = uniform.step_loss(trainer.policy, rollouts, uniform.prepare(rollouts, rewards), 1)
    torch.testing.assert_close(loss_star, loss_uniform)


def test_fdfo_moves_toward_the_better_sample(trainer: Trainer) -> None:
    """A gradient step on the FDFO loss of one pair where branch 1 scored higher (dR > 0)
    brings branch 1's velocity toward v_old − dx (its sample toward x_1) and pushes branch 2's
    away from v_old + dx (its sample away from x_2)."""
    objective = FdfoObjective(clip=0.03)
    trainer.objective = objective
    rollouts = trainer.sample(GENEVAL_RECORDS[:1] * 2)
    assert torch.equal(rollouts.latents[0, 0], rollouts.latents[1, 0]), "pairs share their initial noise"
    targets = objective.prepare(rollouts, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert targets.advantages.tolist() == [0.5, -0.5, -0.5, 0.5]
    torch.testing.assert_close(targets.directions[0], -targets.directions[1])
    torch.testing.assert_close(targets.directions.pow(2).mean(dim=(1, 2, 3)), torch.ones(4))
    pair = torch.tensor([0, 1])
    rollouts, targets = rollouts.select(pair), targets.select(pair)
    t = 1
    x, s = rollouts.latents[:, t], rollouts.sigmas[t]
    own_target = rollouts.velocities[:, t] - targets.directions

    def distance() -> torch.Tensor:
        with torch.no_grad():
            return ((trainer.policy.velocity(x, s, rollouts.cond) - own_target) ** 2).mean(dim=(1, 2, 3))

    with torch.no_grad():  # with LoRA B = 0 the A matrices get no gradient: start off zero
        for name, p in trainer.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01, generator=torch.Generator().manual_seed(5))
    before = distance()
    optimizer = torch.optim.SGD(trainer.params, lr=1.0)
    loss, _ = objective.step_loss(trainer.policy, rollouts, targets, t)
    loss.backward()
    optimizer.step()
    after = distance()
    assert after[0] < before[0] and after[1] > before[1], (before, after)
