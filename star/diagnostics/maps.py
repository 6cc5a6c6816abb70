"""Allocation maps of a model for given prompts and how well they localise the core objects
(the report's map figure and the map-quality measurement, docs/method.md §3.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rewards.base import Reward, can_locate, score_and_locate
from star.config import TrainConfig
from star.method.allocation import AllocationInputs, AllocationParams, allocate, allocation_maps
from star.method.attention import AttentionCapture
from star.method.core_content import core_token_mask, text_segments
from star.method.regions import localisation, token_coverage
from star.sampling.rollout import sample_rollouts, trained_steps
from star.sampling.sampler import condition, initial_noise, latent_shape, sigma_schedule


@dataclass
class CapturedMaps:
    """One SDE rollout per record with capture: images (N, 3, H, W) in [0, 1]; attention
    (N, T, P) captured core attention; sigmas (T + 1,); coverage (N, P) of the core objects the
    reward finds in the images, or None without a locating reward."""

    images: torch.Tensor
    attention: torch.Tensor
    sigmas: torch.Tensor
    coverage: torch.Tensor | None


@torch.no_grad()
def capture_maps(
    pipe: Any, records: list[dict[str, Any]], cfg: TrainConfig, seed: int, reward: Reward | None = None
) -> CapturedMaps:
    """Sample one rollout per record (seed ``seed + index``, the SDE noise from ``seed``) with
    ``cfg``'s capture blocks and text segments; the capture does not change the samples, so
    settings compared at one seed see the same images."""
    device = pipe.transformer.device
    prompts = [r["prompt"] for r in records]
    cond = condition(pipe, prompts, cfg.guidance_scale, device)
    noise = initial_noise(latent_shape(pipe), [seed + i for i in range(len(records))], device)
    sigmas = sigma_schedule(pipe, cfg.steps, device)
    capture = AttentionCapture(pipe.transformer, cfg.capture_blocks)
    try:
        mask = core_token_mask(text_segments(pipe, cfg.core_segments), prompts, records).to(device)
        fields = sample_rollouts(
            pipe.transformer, pipe.vae, cond, noise, sigmas, cfg.noise_level, cfg.guidance_scale,
            torch.Generator().manual_seed(seed), capture, mask,
        )
    finally:
        capture.remove()
    coverage = None
    if reward is not None and can_locate(reward):
        _, boxes = score_and_locate(reward, fields["images"], prompts, records)
        grid = int(round(fields["attention"].shape[-1] ** 0.5))
        coverage = token_coverage(boxes, fields["images"].shape[-1], grid)
    return CapturedMaps(fields["images"], fields["attention"], sigmas.cpu(), coverage)


def variant_weights(maps: CapturedMaps, cfg: TrainConfig, seed: int) -> torch.Tensor:
    """The allocation weights (N, T, P) that ``cfg.allocation`` would train on these rollouts."""
    params = AllocationParams(cfg.gamma, cfg.mix, cfg.w_min, cfg.w_max, cfg.temporal_rule)
    inputs = AllocationInputs(
        maps.attention, maps.sigmas, trained_steps(None, cfg.steps, cfg.train_fraction), maps.coverage,
        torch.Generator().manual_seed(seed),
    )
    return allocate(cfg.allocation, inputs, params, tuple(maps.attention.shape))


def model_allocation_maps(
    pipe: Any, records: list[dict[str, Any]], cfg: TrainConfig, seed: int, reward: Reward | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images (N, 3, H, W), the weights of ``cfg.allocation`` (N, T, P) and each map's
    localisation (N, T) on the core objects (None without a locating reward)."""
    maps = capture_maps(pipe, records, cfg, seed, reward)
    weights = variant_weights(maps, cfg, seed)
    scores = localisation(weights, maps.coverage) if maps.coverage is not None else None
    return maps.images, weights, scores


@dataclass
class LocalisationRow:
    """Per step, the mean localisation of a setting's maps over the images with a core object
    and its standard error; ``images`` how many had one."""

    name: str
    mean: list[float]
    sem: list[float]
    images: int


def localisation_rows(maps: CapturedMaps, settings: dict[str, AllocationParams]) -> list[LocalisationRow]:
    """The localisation of the spatial maps m (method §3.3) of each parameter setting on the
    same captured attention: (T,) mean ± SE per setting."""
    if maps.coverage is None:
        raise ValueError("localisation needs the core objects' coverage: capture with a reward that can locate them")
    found = maps.coverage.sum(-1) > 0
    rows = []
    for name, params in settings.items():
        scores = localisation(allocation_maps(maps.attention, params), maps.coverage)[found]
        n = len(scores)
        sem = scores.std(dim=0) / math.sqrt(n) if n > 1 else torch.full((scores.shape[1],), float("nan"))
        rows.append(LocalisationRow(name, scores.mean(dim=0).tolist(), sem.tolist(), n))
    return rows
