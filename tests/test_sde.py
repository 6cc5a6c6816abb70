"""The SDE step of method §1: log-probs against torch.distributions, the ODE limit, σ_t at s = 1
and at every step of a real schedule."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from star.sampling.sde import diffusion_coefficient, step_distribution


def test_log_prob_matches_torch_normal() -> None:
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    dist = step_distribution(x, v, torch.tensor(0.8), torch.tensor(0.6), torch.tensor(0.95), noise_level=0.7)
    sample = dist.sample(torch.randn(x.shape, generator=g))
    reference = torch.distributions.Normal(dist.mean, dist.std.expand_as(dist.mean)).log_prob(sample)
    torch.testing.assert_close(dist.log_prob(sample), reference, rtol=1e-6, atol=1e-6)
    assert dist.log_prob(sample).shape == x.shape


def test_mean_and_std_follow_the_formula() -> None:
    x, v = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), -1.0)
    s, s_next, a = 0.8, 0.6, 0.7
    dist = step_distribution(x, v, s, s_next, 0.95, a)
    sigma_t = a * math.sqrt(s / (1 - s))
    dt = s_next - s
    mean = 0.5 * (1 + sigma_t**2 / (2 * s) * dt) - 1.0 * (1 + sigma_t**2 * (1 - s) / (2 * s)) * dt
    torch.testing.assert_close(dist.mean, torch.full_like(x, mean))
    torch.testing.assert_close(dist.std.flatten(), torch.tensor([sigma_t * math.sqrt(-dt)]))


def test_zero_noise_is_the_euler_ode_step() -> None:
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    dist = step_distribution(x, v, 0.5, 0.3, 0.9, noise_level=0.0)
    torch.testing.assert_close(dist.mean, x + v * (0.3 - 0.5))
    assert float(dist.std.max()) == 0.0


def test_first_step_keeps_s_in_the_numerator() -> None:
    """At s = 1 only the denominator takes s_1 (Flow-GRPO's sd3_sde_with_logprob.py)."""
    sigma_t = diffusion_coefficient(torch.tensor([1.0, 0.5]), torch.tensor(0.9), 0.7)
    torch.testing.assert_close(sigma_t, torch.tensor([0.7 * math.sqrt(1 / 0.1), 0.7]))
    dist = step_distribution(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 1.0, 0.9, 0.9, 0.7)
    assert torch.isfinite(dist.mean).all() and torch.isfinite(dist.std).all()


def test_every_step_of_a_ten_step_schedule_matches_the_formula() -> None:
    """σ_t, μ and std recomputed in plain Python at each step of SD3's shifted 10-step schedule."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas.tolist()
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and len(sigmas) == 11
    g = torch.Generator().manual_seed(2)
    x, v = (torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64),
            torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64))
    a = 0.7
    for t in range(10):
        s, s_next, s_1 = sigmas[t], sigmas[t + 1], sigmas[1]
        sigma_t = a * math.sqrt(s / (1 - (s_1 if s == 1 else s)))
        dt = s_next - s
        dist = step_distribution(x, v, s, s_next, s_1, a)
        assert dist.sigma_t.item() == pytest.approx(sigma_t, rel=1e-12), t
        assert dist.std.item() == pytest.approx(sigma_t * math.sqrt(-dt), rel=1e-12), t
        mean = x * (1 + sigma_t**2 / (2 * s) * dt) + v * (1 + sigma_t**2 * (1 - s) / (2 * s)) * dt
        torch.testing.assert_close(dist.mean, mean, rtol=1e-12, atol=1e-12)
