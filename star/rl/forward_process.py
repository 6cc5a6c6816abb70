"""What DiffusionNFT and DGPO share (docs/method.md §6.1–§6.3): re-noising the final latent of a
deterministic rollout at the sampler's grid points, and allocation maps as per-element weights.

Both losses are means of per-element squared errors; an allocation map (B, T, P) weights those
elements before the mean, the map of the grid point each rollout is trained at.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from star.method.allocation import CAPTURING_MODES, AllocationMode, AllocationParams
from star.rl.objectives import RolloutKind, Targets, allocation_weights
from star.sampling.rollout import Rollouts


@dataclass
class GridPoint:
    """The k-th drawn grid point of a minibatch: final: (B, C, h, w) x₀; noise: (B, C, h, w) ε;
    sigma: (B,) σ; x_t: (B, C, h, w) x_σ; weights: (B, 1, h, w) the allocation there, or None."""

    final: torch.Tensor
    noise: torch.Tensor
    sigma: torch.Tensor
    x_t: torch.Tensor
    weights: torch.Tensor | None


def noised(final: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ) x_0 + σ ε (method §6.1); final, noise: (B, C, h, w); sigma: (B,)."""
    s = sigma.to(final)[:, None, None, None]
    return (1 - s) * final + s * noise


def grid_sigmas(rollouts: Rollouts, grid_index: torch.Tensor) -> torch.Tensor:
    """(B,) σ of each rollout's grid index (B,) on the sampler's schedule (T + 1,)."""
    return rollouts.sigmas[grid_index.to(rollouts.sigmas.device)]


def element_weights(weights: torch.Tensor | None, grid_index: torch.Tensor, patch: int) -> torch.Tensor | None:
    """The allocation map of each rollout's grid point on the latent's elements.

    weights: (B, T, P) with P = (h/patch)·(w/patch) in the transformer's token order, or None;
    grid_index: (B,). Returns (B, 1, h, w) (broadcast over channels), or None.
    """
    if weights is None:
        return None
    maps = weights[torch.arange(len(grid_index)), grid_index.to(weights.device)]  # (B, P)
    side = round(maps.shape[1] ** 0.5)
    grid = maps.reshape(-1, 1, side, side)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean over (C, h, w) of w ⊙ values, per rollout: (B, C, h, w) -> (B,). With maps of mean 1
    over positions, uniform maps (all ones) give exactly the unweighted mean."""
    if weights is not None:
        values = values * weights.to(values)
    return values.mean(dim=(1, 2, 3))


class ForwardProcessObjective:
    """What a forward-process objective declares to the trainer (deterministic rollouts, its own
    timesteps, no velocities kept) and its allocation: ``mode``, its parameters, the patch size;
    ``maps`` gives (B, T, P) weights over the grid points it may train, or None for ``none``."""

    needs_velocities = False
    noise_share = "none"
    rollout: RolloutKind = "ode"
    whole_groups = False

    def __init__(self, mode: AllocationMode, params: AllocationParams, patch_size: int, global_std: bool,
                 advantage_clip: float) -> None:
        if mode == "uniform_region":
            raise ValueError("allocation 'uniform_region' is a clipped-ratio granularity; the forward-process "
                             "objectives have no ratio per region (use 'none')")
        self.mode, self.allocation, self.patch = mode, params, patch_size
        self.global_std, self.advantage_clip = global_std, advantage_clip
        self.needs_capture = mode in CAPTURING_MODES
        self.needs_regions = mode == "oracle"

    def grid_point(self, rollouts: Rollouts, targets: Targets, k: int) -> GridPoint:
        """x_σ at each rollout's k-th drawn grid point with its ε, and the allocation there."""
        assert targets.timesteps is not None and targets.noise is not None
        final = rollouts.latents[:, -1]
        grid_index = targets.timesteps[:, k]
        sigma = grid_sigmas(rollouts, grid_index)
        noise = targets.noise[:, k].to(final)
        weights = element_weights(targets.weights, grid_index, self.patch)
        return GridPoint(final, noise, sigma, noised(final, noise, sigma), weights)

    def maps(self, rollouts: Rollouts, grid_steps: list[int], generator: torch.Generator | None) -> torch.Tensor | None:
        """(B, T, P) weights with mean 1 over ``grid_steps`` and all positions (method §3.3, §5)."""
        if self.mode == "none":
            return None
        return allocation_weights(self.mode, self.allocation, self.patch, rollouts, grid_steps, generator)
