"""Diagnostics of a base model: how much of a scene survives its VAE, does the caption steer
the denoiser, from which noise level on does the model keep the object the caption asks for, and
which steps' SDE noise moves the reward? (How much of a training gradient is signal:
``star.diagnostics.gradient_snr``.)

The first two start from clean latents z₀ of rendered scenes noised to z_s = (1 − s) z₀ + s ε
(docs/method.md §0), so they separate "cannot read the caption" from "cannot draw". The last two
sample like the trainer (docs/method.md §1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, StableDiffusion3Pipeline

from star.models.sd3 import images_from_latents, latents_from_images
from star.sampling.rollout import sample_rollouts
from star.sampling.sampler import condition, guided_velocity, initial_noise, latent_shape, sigma_schedule

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""(B, 3, H, W) images in [0, 1] -> (B,) scores, e.g. a GenEval reward bound to its prompts."""


def noised(latents: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """(B, C, h, w) z_s = (1 − s) z₀ + s ε with ε drawn from ``seed``."""
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    return (1 - sigma) * latents + sigma * noise.to(latents)


@torch.no_grad()
def vae_round_trip(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1], encoded to their latent means and decoded back: what the
    transformer could at best reproduce. Scoring these bounds every checkpoint's score from
    above (a VAE that turns red into orange caps GenEval whatever the transformer learns)."""
    return images_from_latents(vae, latents_from_images(vae, images.to(vae.device)))


@torch.no_grad()
def predicted_clean(
    pipe: StableDiffusion3Pipeline, noisy: torch.Tensor, sigma: float, prompts: list[str]
) -> torch.Tensor:
    """The model's x̂₀ = z_s − s · v_θ(z_s, s, c) for (B, C, h, w) ``noisy`` and B prompts."""
    cond = condition(pipe, prompts, guidance_scale=1.0, device=noisy.device)
    velocity = guided_velocity(pipe.transformer, noisy, torch.tensor(sigma, device=noisy.device), cond, 1.0)
    return noisy - sigma * velocity


@torch.no_grad()
def caption_sensitivity(
    pipe: StableDiffusion3Pipeline,
    images: torch.Tensor,
    prompts: list[str],
    variants: dict[str, list[str]],
    sigmas: list[float],
    seed: int = 0,
) -> dict[float, dict[str, float]]:
    """Per noise level s: the x̂₀ error ``x0_mse`` = mean (x̂₀ − z₀)² under the true captions,
    and for each named variant (e.g. the shape word swapped, the empty caption) the mean squared
    change of x̂₀ it causes. A model that reads a word changes x̂₀ when the word changes.

    images: (B, 3, H, W) in [0, 1]; prompts and every variant: B captions.
    """
    for name, other in variants.items():
        if len(other) != len(prompts):
            raise ValueError(f"variant {name!r} has {len(other)} captions for {len(prompts)} images")
    clean = latents_from_images(pipe.vae, images.to(pipe.transformer.device))
    table: dict[float, dict[str, float]] = {}
    for sigma in sigmas:
        noisy = noised(clean, sigma, seed)
        reference = predicted_clean(pipe, noisy, sigma, prompts)
        row = {"x0_mse": ((reference - clean) ** 2).mean().item()}
        for name, other in variants.items():
            row[name] = ((predicted_clean(pipe, noisy, sigma, other) - reference) ** 2).mean().item()
        table[sigma] = row
    return table


@torch.no_grad()
def commitment_curve(
    pipe: StableDiffusion3Pipeline,
    images: torch.Tensor,
    prompts: list[str],
    score: Scorer,
    steps: int,
    guidance_scale: float,
    start_steps: list[int],
    seed: int = 0,
) -> list[tuple[float, float]]:
    """(s_k, mean score) for each k in ``start_steps``: the scenes noised to the sampler's s_k
    and solved to 0 with the Euler ODE and CFG (docs/method.md §1). The score stays high down to
    the noise level where the model still keeps what the caption asks for; above it the model
    has to create it.

    images: (B, 3, H, W) in [0, 1]; ``score`` sees (B, 3, H, W) decoded images.
    """
    if any(not 0 <= k < steps for k in start_steps):
        raise ValueError(f"start_steps must lie in [0, {steps}), got {start_steps}")
    device = pipe.transformer.device
    sigmas = sigma_schedule(pipe, steps, device)
    clean = latents_from_images(pipe.vae, images.to(device))
    cond = condition(pipe, prompts, guidance_scale, device)
    curve = []
    for k in start_steps:
        latents = noised(clean, float(sigmas[k]), seed)
        for s, s_next in zip(sigmas[k:-1], sigmas[k + 1 :]):
            latents = latents + guided_velocity(pipe.transformer, latents, s, cond, guidance_scale) * (s_next - s)
        curve.append((float(sigmas[k]), score(images_from_latents(pipe.vae, latents)).float().mean().item()))
    return curve


@torch.no_grad()
def reward_variance_by_step(
    pipe: StableDiffusion3Pipeline,
    prompts: list[str],
    scorers: list[Scorer],
    steps: int,
    noise_level: float,
    guidance_scale: float,
    sde_steps: list[int | None],
    initial_noises: int = 4,
    draws: int = 6,
    seed: int = 0,
) -> dict[int | None, float]:
    """For each k of ``sde_steps``: the reward variance that the SDE noise of step k alone
    causes (the other steps take the ODE step; None: noise at every step). Variance over
    ``draws`` noise draws from one initial noise, averaged over ``initial_noises`` initial
    noises and the prompts. The policy gradient of a step whose noise does not move the reward
    is pure noise (docs/method.md §1).

    ``scorers[i]`` scores (N, 3, H, W) images of ``prompts[i]`` -> (N,).
    """
    if len(scorers) != len(prompts):
        raise ValueError(f"{len(scorers)} scorers for {len(prompts)} prompts")
    device = pipe.transformer.device
    sigmas = sigma_schedule(pipe, steps, device)
    n = initial_noises * draws
    start = initial_noise(latent_shape(pipe), [seed + i // draws for i in range(n)], device)
    variances: dict[int | None, list[float]] = {k: [] for k in sde_steps}
    for prompt, score in zip(prompts, scorers):
        cond = condition(pipe, [prompt] * n, guidance_scale, device)
        for k in sde_steps:
            generator = torch.Generator().manual_seed(seed)
            rollouts = sample_rollouts(pipe.transformer, pipe.vae, cond, start, sigmas, noise_level, guidance_scale,
                                       generator, sde_steps=None if k is None else [k])
            rewards = score(rollouts["images"]).float().reshape(initial_noises, draws)
            variances[k].append(rewards.var(dim=1).mean().item())
    return {k: sum(values) / len(values) for k, values in variances.items()}
