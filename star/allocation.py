"""Allocation maps: how a rollout's advantage is spread over denoising steps and latent regions
(docs/method.md §3.3 and §5).

Every mode returns weights w (B, T, P) whose mean over (t, p) is 1 for every rollout, so the
group-relative advantage Â_i is redistributed as Â_i · w, never created or destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

AllocationMode = Literal["none", "uniform_region", "temporal", "spatial", "star"]
_EPS = 1e-8


@dataclass(frozen=True)
class AllocationParams:
    """γ (sharpening), λ (mix with uniform), and the clamp [w_min, w_max] of method §3.3."""

    gamma: float = 1.0
    mix: float = 1.0
    w_min: float = 0.25
    w_max: float = 4.0


def _mean_one(x: torch.Tensor) -> torch.Tensor:
    """Scale the last dimension to mean 1; all-zero rows (no core token seen) become uniform."""
    mean = x.mean(dim=-1, keepdim=True)
    return torch.where(mean > _EPS, x / mean.clamp_min(_EPS), torch.ones_like(x))


def allocation_maps(attention: torch.Tensor, params: AllocationParams) -> torch.Tensor:
    """w_{i,t}(p) from captured attention A_{i,t}(p) (method §3.3):

        m = A / mean_p A;  m = m^γ / mean_p m^γ;  w = λ m + (1 − λ);
        w = clamp(w, w_min, w_max);  w = w / mean_p w

    attention: (B, T, P), non-negative. Returns (B, T, P) with mean_p w = 1 for every (i, t).
    The final renormalisation can move a clamped value slightly past the clamp; the mean is
    what must hold exactly.
    """
    if (attention < 0).any():
        raise ValueError("attention maps must be non-negative")
    m = _mean_one(_mean_one(attention) ** params.gamma)
    w = params.mix * m + (1 - params.mix)
    return _mean_one(w.clamp(params.w_min, params.w_max))


def concentration(maps: torch.Tensor) -> torch.Tensor:
    """How peaked each mean-1 map is: mean_p w² = 1 + Var_p(w). (B, T, P) -> (B, T)."""
    return (maps**2).mean(dim=-1)


def allocate(mode: AllocationMode, attention: torch.Tensor | None, params: AllocationParams, shape: tuple[int, int, int]) -> torch.Tensor:
    """The weights of ``mode`` (method §5), (B, T, P) = ``shape``; mean over (t, p) is 1.

    - none / uniform_region: 1 everywhere (they differ in the ratio's granularity, not here);
    - temporal: uniform in space, one scalar per step ∝ the STAR map's concentration,
      clamped and normalised to mean 1 over the steps;
    - spatial: the STAR maps averaged over steps, the same map at every step;
    - star: w_{i,t}(p).
    """
    if mode in ("none", "uniform_region"):
        return torch.ones(shape)
    if attention is None:
        raise ValueError(f"allocation mode {mode!r} needs captured attention maps")
    if tuple(attention.shape) != tuple(shape):
        raise ValueError(f"attention maps have shape {tuple(attention.shape)}, expected {shape}")
    maps = allocation_maps(attention, params)
    if mode == "star":
        return maps
    if mode == "spatial":
        return _mean_one(maps.mean(dim=1, keepdim=True)).expand(shape).clone()
    if mode == "temporal":
        per_step = _mean_one(concentration(maps)).clamp(params.w_min, params.w_max)
        return _mean_one(per_step)[..., None].expand(shape).clone()
    raise ValueError(f"unknown allocation mode {mode!r}")
