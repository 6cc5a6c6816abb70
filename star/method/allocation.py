"""Allocation maps: how a rollout's advantage is spread over denoising steps and latent regions
(docs/method.md §3.3 and §5).

Every mode returns weights w (B, T, P) whose mean over the trained steps and all positions is 1
for every rollout, so the group-relative advantage Â_i is redistributed as Â_i · w, never
created or destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from star.config import AllocationMode, TemporalRule

DIAGNOSTIC_MODES: tuple[str, ...] = ("oracle", "shuffled")
"""Controls, not methods: ``oracle`` reads the reward's own detections of the final image."""
CAPTURING_MODES: tuple[str, ...] = ("temporal", "spatial", "star", "shuffled")
"""Modes whose weights come from the captured attention."""
_EPS = 1e-8


@dataclass(frozen=True)
class AllocationParams:
    """γ (sharpening), λ (mix with uniform), the clamp [w_min, w_max] of method §3.3 and the
    rule of the temporal weight τ (method §5)."""

    gamma: float = 1.0
    mix: float = 1.0
    w_min: float = 0.25
    w_max: float = 4.0
    temporal_rule: TemporalRule = "map_change"


@dataclass
class AllocationInputs:
    """What a mode reads for a batch of B rollouts of T steps on P positions.

    attention: (B, T, P) captured core attention A, or None; coverage: (B, P) share of each
    position covered by the core objects the reward's detector finds in the final image, or
    None; sigmas: (T + 1,) the schedule; trained_steps: the steps the update trains (τ has mean
    1 over them); generator: randomness of ``shuffled``.
    """

    attention: torch.Tensor | None
    sigmas: torch.Tensor
    trained_steps: list[int]
    coverage: torch.Tensor | None = None
    generator: torch.Generator | None = None


def _mean_one(x: torch.Tensor) -> torch.Tensor:
    """Scale the last dimension to mean 1; all-zero rows (no core token seen) become uniform."""
    mean = x.mean(dim=-1, keepdim=True)
    return torch.where(mean > _EPS, x / mean.clamp_min(_EPS), torch.ones_like(x))


def allocation_maps(attention: torch.Tensor, params: AllocationParams) -> torch.Tensor:
    """m_{i,t}(p) from captured attention A_{i,t}(p) (method §3.3):

        m = A / mean_p A;  m = m^γ / mean_p m^γ;  w = λ m + (1 − λ);
        w = clamp(w, w_min, w_max);  w = w / mean_p w

    attention: (..., P), non-negative. Returns the same shape with mean_p w = 1 for every map.
    The final renormalisation can move a clamped value slightly past the clamp; the mean is
    what must hold exactly.
    """
    if (attention < 0).any():
        raise ValueError("attention maps must be non-negative")
    m = _mean_one(_mean_one(attention) ** params.gamma)
    w = params.mix * m + (1 - params.mix)
    return _mean_one(w.clamp(params.w_min, params.w_max))


def map_change(maps: torch.Tensor) -> torch.Tensor:
    """How much step t's transition changes the map: mean_p |m_{t+1} − m_t|, (B, T, P) -> (B, T).

    The map after the last step is never captured, so the last step repeats the one before."""
    if maps.shape[1] < 2:
        return torch.ones(maps.shape[:2])
    change = (maps[:, 1:] - maps[:, :-1]).abs().mean(dim=-1)
    return torch.cat([change, change[:, -1:]], dim=1)


def temporal_weights(maps: torch.Tensor, inputs: AllocationInputs, params: AllocationParams) -> torch.Tensor:
    """τ_{i,t} (method §5): the rule's score per step, normalised to mean 1 over the trained
    steps, clamped to [w_min, w_max] and normalised again. maps: (B, T, P) -> (B, T)."""
    if params.temporal_rule == "map_change":
        score = map_change(maps)
    elif params.temporal_rule == "sigma":
        score = inputs.sigmas[:-1].float().cpu().expand(maps.shape[0], -1)
    else:
        raise ValueError(f"unknown temporal rule {params.temporal_rule!r}; expected one of {get_args(TemporalRule)}")
    trained = list(inputs.trained_steps)

    def over_trained(tau: torch.Tensor) -> torch.Tensor:
        mean = tau[:, trained].mean(dim=1, keepdim=True)
        return torch.where(mean > _EPS, tau / mean.clamp_min(_EPS), torch.ones_like(tau))

    return over_trained(over_trained(score).clamp(params.w_min, params.w_max))


def shuffle_positions(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each (i, t) map with its positions permuted independently: the same weights, no
    localisation. (B, T, P) -> (B, T, P)."""
    keys = torch.rand(weights.shape, generator=generator)
    return weights.gather(-1, keys.argsort(dim=-1))


def allocate(mode: AllocationMode, inputs: AllocationInputs, params: AllocationParams,
             shape: tuple[int, int, int]) -> torch.Tensor:
    """The weights of ``mode`` (method §5), (B, T, P) = ``shape``; mean over the trained steps
    and all positions is 1.

    - none / uniform_region: 1 everywhere (they differ in the ratio's granularity, not here);
    - temporal: uniform in space, τ_{i,t} of ``params.temporal_rule`` per step;
    - spatial: the maps m averaged over the trained steps, the same map at every step;
    - star: τ_{i,t} · m_{i,t}(p);
    - oracle: the map of the core objects' coverage of the final image (same normalisation),
      at every step: the most a spatial allocation could gain;
    - shuffled: star's weights with the positions of each (i, t) permuted.
    """
    if mode in ("none", "uniform_region"):
        return torch.ones(shape)
    if mode == "oracle":
        if inputs.coverage is None:
            raise ValueError("allocation mode 'oracle' needs the core objects' coverage from the reward's detector")
        if tuple(inputs.coverage.shape) != (shape[0], shape[2]):
            raise ValueError(f"coverage has shape {tuple(inputs.coverage.shape)}, expected {(shape[0], shape[2])}")
        return allocation_maps(inputs.coverage.float(), params)[:, None].expand(shape).clone()
    attention = inputs.attention
    if attention is None:
        raise ValueError(f"allocation mode {mode!r} needs captured attention maps")
    if tuple(attention.shape) != tuple(shape):
        raise ValueError(f"attention maps have shape {tuple(attention.shape)}, expected {shape}")
    maps = allocation_maps(attention, params)
    if mode == "spatial":
        return _mean_one(maps[:, inputs.trained_steps].mean(dim=1, keepdim=True)).expand(shape).clone()
    tau = temporal_weights(maps, inputs, params)[..., None]
    if mode == "temporal":
        return tau.expand(shape).clone()
    if mode == "star":
        return tau * maps
    if mode == "shuffled":
        return shuffle_positions(tau * maps, inputs.generator)
    raise ValueError(f"unknown allocation mode {mode!r}")
