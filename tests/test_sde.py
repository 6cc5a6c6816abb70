"""The SDE step of method §1: log-probs against torch.distributions, the ODE limit, σ_t at s = 1."""

from __future__ import annotations

import math

import torch

from star.sde import diffusion_coefficient, step_distribution


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


def test_first_step_uses_the_next_sigma() -> None:
    sigma_t = diffusion_coefficient(torch.tensor([1.0, 0.5]), torch.tensor(0.9), 0.7)
    torch.testing.assert_close(sigma_t, torch.tensor([0.7 * 3.0, 0.7]))
    dist = step_distribution(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 1.0, 0.9, 0.9, 0.7)
    assert torch.isfinite(dist.mean).all() and torch.isfinite(dist.std).all()
