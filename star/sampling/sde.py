"""One denoising step of the flow model as a Gaussian policy (docs/method.md §1).

The SDE step turns the deterministic Euler update into a Gaussian transition with a closed-form
per-element log-density, which is what the policy-gradient objectives differentiate. With
``noise_level = 0`` it reduces to the ODE step used for evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepDistribution:
    """The Gaussian N(mean, std²) of x' given x, for a batch.

    mean: (B, C, h, w); std: (B, 1, 1, 1) (std of the transition, σ_t·sqrt(−dt));
    sigma_t: (B, 1, 1, 1) (the SDE's diffusion coefficient σ_t, used by the KL of §4).
    """

    mean: torch.Tensor
    std: torch.Tensor
    sigma_t: torch.Tensor

    def log_prob(self, sample: torch.Tensor) -> torch.Tensor:
        """Per-element log N(sample; mean, std²), shape (B, C, h, w) (method §1)."""
        return -((sample - self.mean) ** 2) / (2 * self.std**2) - torch.log(self.std) - _HALF_LOG_2PI

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """x' = mean + std · ε for ε ~ N(0, I) of shape (B, C, h, w)."""
        return self.mean + self.std * noise


def _per_sample(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) tensor as (B, 1, 1, 1) in ``like``'s dtype and device."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.reshape(-1, 1, 1, 1).expand(like.shape[0], 1, 1, 1)


def diffusion_coefficient(sigma: torch.Tensor, sigma_first: torch.Tensor, noise_level: float) -> torch.Tensor:
    """σ_t = a · sqrt(s / (1 − ŝ)), ŝ = s_1 where s = 1 and s elsewhere (method §1).

    Only the denominator changes at s = 1 (it would divide by zero), as in Flow-GRPO's
    ``sd3_sde_with_logprob.py``; the numerator keeps s = 1.
    """
    denominator = 1 - torch.where(sigma >= 1, sigma_first, sigma)
    return noise_level * torch.sqrt(sigma / denominator)


def step_distribution(
    latents: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    sigma_first: torch.Tensor | float,
    noise_level: float,
) -> StepDistribution:
    """The transition from noise level s to s' < s (method §1):

        μ   = x (1 + σ_t² dt / (2s)) + v (1 + σ_t² (1 − s) / (2s)) dt,   dt = s' − s
        std = σ_t · sqrt(−dt)

    latents, velocity: (B, C, h, w); sigmas: scalars or (B,); ``sigma_first`` is s_1, the first
    sigma below 1 of the schedule. With noise_level = 0 this is the Euler ODE step x + v dt
    (std 0: sample with ``mean`` directly, never ``log_prob``).
    """
    s = _per_sample(sigma, latents)
    dt = _per_sample(sigma_next, latents) - s
    sigma_t = diffusion_coefficient(s, _per_sample(sigma_first, latents), noise_level)
    mean = latents * (1 + sigma_t**2 / (2 * s) * dt) + velocity * (1 + sigma_t**2 * (1 - s) / (2 * s)) * dt
    return StepDistribution(mean=mean, std=sigma_t * torch.sqrt(-dt), sigma_t=sigma_t)
