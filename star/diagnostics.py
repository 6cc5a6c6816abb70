"""Diagnostics of a base model and of a training configuration: does the caption steer the
denoiser, from which noise level on does the model keep the object the caption asks for, which
steps' SDE noise moves the reward, and how much of a batch's training gradient is signal?

The first two start from clean latents z₀ of rendered scenes noised to z_s = (1 − s) z₀ + s ε
(docs/method.md §0), so they separate "cannot read the caption" from "cannot draw". The last two
sample like the trainer (docs/method.md §1, §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import StableDiffusion3Pipeline

from star.models import images_from_latents, latents_from_images
from star.rollout import sample_rollouts
from star.sampling import condition, guided_velocity, initial_noise, latent_shape, sigma_schedule

if TYPE_CHECKING:  # annotations only: the base diagnostics need no trainer (accelerate, peft)
    from star.prompt_source import Record
    from star.trainer import Trainer

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""(B, 3, H, W) images in [0, 1] -> (B,) scores, e.g. a GenEval reward bound to its prompts."""


def noised(latents: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """(B, C, h, w) z_s = (1 − s) z₀ + s ε with ε drawn from ``seed``."""
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    return (1 - sigma) * latents + sigma * noise.to(latents)


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


@dataclass(frozen=True)
class GradientAgreement:
    """Cosines between independent estimates g₁ … g_k of the training gradient at the same weights.

    With g = s + n (signal, batch noise), cos(g_a, g_b) ≈ |s|² / (|s|² + |n|²): near 0 the update of
    one batch is mostly noise and the trainer needs far more rollouts per step (method §4). The
    noise of a few hundred rollouts spans few directions, so single cosines scatter: compare means.
    """

    cosines: list[float]  # one per pair of estimates
    norms: list[float]  # one per estimate
    reward_mean: float
    rollouts_per_estimate: int

    @property
    def cosine_mean(self) -> float:
        return sum(self.cosines) / len(self.cosines)

    @property
    def cosine_sem(self) -> float:
        """Standard error of ``cosine_mean`` as if the pairs were independent (they share estimates)."""
        n = len(self.cosines)
        if n < 2:
            return float("nan")
        variance = sum((c - self.cosine_mean) ** 2 for c in self.cosines) / (n - 1)
        return (variance / n) ** 0.5


def batch_gradient(trainer: Trainer, records: list[Record], batches: int, seed: int) -> tuple[torch.Tensor, float]:
    """The gradient of ``trainer``'s objective summed over ``batches`` batches of G rollouts per
    record and every step the trainer may train (its SDE steps), without an optimizer step.

    Reseeds ``trainer.generator`` with ``seed``. Returns the flattened gradient over the trainable
    parameters, shape (n_params,), and the batches' mean reward.
    """
    trainer.generator.manual_seed(seed)
    total = [torch.zeros_like(p) for p in trainer.params]
    rewards = []
    for _ in range(batches):
        rollouts = trainer.sample(records)
        scores = trainer.reward.score(rollouts.images, rollouts.prompts, rollouts.records)
        targets = trainer.objective.prepare(rollouts, scores)
        steps = rollouts.sde_steps if rollouts.sde_steps is not None else range(trainer.train_cfg.steps)
        trainer.transformer.train()
        for t in steps:
            loss, _ = trainer.objective.step_loss(trainer.policy, rollouts, targets, t)
            loss.backward()
        trainer.transformer.eval()
        for accumulated, parameter in zip(total, trainer.params):
            if parameter.grad is not None:
                accumulated += parameter.grad
            parameter.grad = None
        rewards.append(scores.float().mean().item())
    return torch.cat([g.flatten() for g in total]), sum(rewards) / len(rewards)


def gradient_agreement(
    trainer: Trainer, records: list[Record], batches: int = 2, seeds: list[int] | None = None
) -> GradientAgreement:
    """Pairwise cosines of ``batch_gradient`` estimates from independent noise, one per seed of
    ``seeds`` (default 1 … 4); a pair's cosine is 0 when either gradient vanishes (no group had
    reward spread)."""
    seeds = seeds if seeds is not None else [1, 2, 3, 4]
    if len(seeds) < 2:
        raise ValueError(f"gradient_agreement needs at least two seeds, got {seeds}")
    estimates = [batch_gradient(trainer, records, batches, seed) for seed in seeds]
    gradients = [g for g, _ in estimates]
    norms = [g.norm().item() for g in gradients]

    def cosine(a: int, b: int) -> float:
        if min(norms[a], norms[b]) == 0:
            return 0.0
        return torch.nn.functional.cosine_similarity(gradients[a], gradients[b], dim=0).item()

    cosines = [cosine(a, b) for a in range(len(gradients)) for b in range(a + 1, len(gradients))]
    rollouts = batches * len(records) * trainer.train_cfg.group_size
    return GradientAgreement(cosines, norms, sum(r for _, r in estimates) / len(estimates), rollouts)
