"""Allocation maps of a model for given prompts (the report's map figure, docs/method.md §3)."""

from __future__ import annotations

from typing import Any

import torch

from star.allocation import AllocationInputs, AllocationParams, allocate
from star.attention import AttentionCapture
from star.config import TrainConfig
from star.core_content import core_token_mask, text_segments
from star.rollout import sample_rollouts, trained_steps
from star.sampling import condition, initial_noise, latent_shape, sigma_schedule


@torch.no_grad()
def model_allocation_maps(
    pipe: Any, records: list[dict[str, Any]], cfg: TrainConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SDE rollout per record with capture; returns the decoded images (N, 3, H, W) and the
    allocation weights of ``cfg.allocation`` (N, T, P) (uniform for non-capturing modes)."""
    device = pipe.transformer.device
    prompts = [r["prompt"] for r in records]
    cond = condition(pipe, prompts, cfg.guidance_scale, device)
    noise = initial_noise(latent_shape(pipe), [seed + i for i in range(len(records))], device)
    capture = AttentionCapture(pipe.transformer, cfg.capture_blocks)
    try:
        mask = core_token_mask(text_segments(pipe, cfg.core_segments), prompts, records).to(device)
        sigmas = sigma_schedule(pipe, cfg.steps, device)
        fields = sample_rollouts(
            pipe.transformer, pipe.vae, cond, noise, sigmas, cfg.noise_level,
            cfg.guidance_scale, torch.Generator().manual_seed(seed), capture, mask,
        )
    finally:
        capture.remove()
    attention = fields["attention"]
    params = AllocationParams(cfg.gamma, cfg.mix, cfg.w_min, cfg.w_max, cfg.temporal_rule)
    inputs = AllocationInputs(attention, sigmas, trained_steps(None, cfg.steps, cfg.train_fraction),
                              generator=torch.Generator().manual_seed(seed))
    return fields["images"], allocate(cfg.allocation, inputs, params, tuple(attention.shape))
