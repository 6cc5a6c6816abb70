"""Sampling from an SD3 flow model: noise, sigma schedules, guided velocities, the ODE sampler.

Evaluation samples with the deterministic Euler ODE (noise level 0) and classifier-free
guidance; docs/method.md §1 gives the update.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from diffusers import StableDiffusion3Pipeline
from tqdm.auto import tqdm

from star.models.sd3 import encode_prompts, images_from_latents


@dataclass
class Conditioning:
    """Text conditioning for a batch, with the unconditional branch when guidance is on.

    embeds: (B, L, D); pooled: (B, P); uncond_*: same shapes, or None without guidance.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor
    uncond_embeds: torch.Tensor | None = None
    uncond_pooled: torch.Tensor | None = None

    def select(self, index: torch.Tensor | slice) -> Conditioning:
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return Conditioning(
            self.embeds[index], self.pooled[index], pick(self.uncond_embeds), pick(self.uncond_pooled)
        )


def condition(
    pipe: StableDiffusion3Pipeline, prompts: list[str], guidance_scale: float, device: torch.device
) -> Conditioning:
    """Encode prompts; with guidance > 1 also the empty prompt, SD3's unconditional input."""
    embeds, pooled = encode_prompts(pipe, prompts, device)
    if guidance_scale <= 1:
        return Conditioning(embeds, pooled)
    uncond, uncond_pooled = encode_prompts(pipe, [""], device)
    batch = len(prompts)
    return Conditioning(
        embeds, pooled, uncond.expand(batch, -1, -1), uncond_pooled.expand(batch, -1)
    )


def latent_shape(pipe: StableDiffusion3Pipeline, resolution: int | None = None) -> tuple[int, int, int]:
    """(C, h, w) of the latent for square images of ``resolution`` px (default: the pipeline's
    ``default_sample_size``, which ``model.resolution`` sets; diffusers' own default size)."""
    scale = pipe.vae_scale_factor
    side = (resolution // scale) if resolution else pipe.default_sample_size
    return pipe.transformer.config.in_channels, side, side


def initial_noise(shape: tuple[int, int, int], seeds: list[int], device: torch.device) -> torch.Tensor:
    """(B, C, h, w) standard normal noise, one generator per image so a seed fixes an image
    whatever the batch it lands in."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise).to(device)


def sigma_schedule(pipe: StableDiffusion3Pipeline, steps: int, device: torch.device) -> torch.Tensor:
    """(steps + 1,) sigmas from 1 down to 0, with the scheduler's shift (SD3: s_0 = 1 > … > s_T = 0)."""
    pipe.scheduler.set_timesteps(num_inference_steps=steps, device=device)
    return pipe.scheduler.sigmas.to(device=device, dtype=torch.float32)


def guided_velocity(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    cond: Conditioning,
    guidance_scale: float,
    recording: AbstractContextManager[object] | None = None,
) -> torch.Tensor:
    """v = v_u + g (v_c − v_u); the unconditional branch carries no gradient (docs/method.md §1).

    latents: (B, C, h, w); sigma: scalar or (B,). ``recording`` wraps the conditional call only
    (attention capture reads the prompt's own attention). Returns (B, C, h, w).
    """
    timestep = (sigma * 1000).expand(latents.shape[0]).to(latents.dtype)

    def velocity(embeds: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return transformer(
            hidden_states=latents, encoder_hidden_states=embeds, pooled_projections=pooled,
            timestep=timestep, return_dict=False,
        )[0]

    with recording or nullcontext():
        v_cond = velocity(cond.embeds, cond.pooled)
    if guidance_scale <= 1 or cond.uncond_embeds is None:
        return v_cond
    with torch.no_grad():
        v_uncond = velocity(cond.uncond_embeds, cond.uncond_pooled)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample_ode(
    pipe: StableDiffusion3Pipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance_scale: float,
    batch_size: int = 32,
    resolution: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler ODE sampling x_{t+1} = x_t + v · (s_{t+1} − s_t). Returns (B, 3, H, W) in [0, 1]."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    device = pipe.transformer.device
    sigmas = sigma_schedule(pipe, steps, device)
    shape = latent_shape(pipe, resolution)
    images = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="sampling", disable=not progress, leave=False):
        chunk = slice(start, start + batch_size)
        cond = condition(pipe, prompts[chunk], guidance_scale, device)
        latents = initial_noise(shape, seeds[chunk], device).to(pipe.transformer.dtype)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = guided_velocity(pipe.transformer, latents, s, cond, guidance_scale)
            latents = latents + v * (s_next - s)
        images.append(images_from_latents(pipe.vae, latents).cpu())
    return torch.cat(images)
