"""Batched SDE rollouts with per-element log-probs and attention capture (docs/method.md §1, §3).

Works on any SD3 pipeline's components (the embedded miniature or SD3.5): the transformer,
VAE and text conditioning are used through diffusers' own classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from star.method.attention import AttentionCapture
from star.models.sd3 import images_from_latents
from star.sampling.sampler import Conditioning, guided_velocity
from star.sampling.sde import step_distribution


@dataclass
class Rollouts:
    """B sampled trajectories of T steps (SDE rollouts), or their final latents (ODE rollouts).

    prompts, records: B prompts and their metadata; group_ids: (B,) prompt-group of each rollout;
    cond: text conditioning (B rows); sigmas: (T + 1,) from 1 to 0;
    latents: (B, T + 1, C, h, w) states x_0 (noise) … x_T (sample); ODE rollouts keep only
    x_T, (B, 1, C, h, w), so ``latents[:, -1]`` is the sample either way;
    log_probs: (B, T, C, h, w) per-element log p(x_{t+1} | x_t) under the sampling policy, or
    None for ODE rollouts;
    velocities: (B, T, C, h, w) guided velocities (kept for FDFO), or None;
    images: (B, 3, H, W) decoded x_T in [0, 1];
    core_mask: (B, L_text) core-token mask, or None without capture;
    attention: (B, T, P) captured core attention on the P = (h/patch)·(w/patch) patch grid, or None;
    sde_steps: the steps sampled with noise (the only ones with log-probs), or None for all T;
    trained: the steps the update trains (method §4: the first ⌊f·T⌋ of the SDE steps);
    core_coverage: (B, P) share of each position covered by the core objects the reward's
    detector finds in the final image (set after scoring, method §3.4), or None.
    """

    prompts: list[str]
    records: list[dict[str, Any]]
    group_ids: torch.Tensor
    cond: Conditioning
    sigmas: torch.Tensor
    latents: torch.Tensor
    log_probs: torch.Tensor | None
    images: torch.Tensor
    velocities: torch.Tensor | None = None
    core_mask: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    sde_steps: list[int] | None = None
    trained: list[int] = field(default_factory=list)
    core_coverage: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: torch.Tensor) -> Rollouts:
        """The rollouts at ``index`` (1-D long tensor), every per-rollout field alike."""
        picked: dict[str, Any] = {}
        for f in fields(self):  # lists of steps (sde_steps, trained) are shared by every rollout
            value = getattr(self, f.name)
            if f.name in ("prompts", "records"):
                picked[f.name] = [value[i] for i in index.tolist()]
            elif f.name == "cond":
                picked[f.name] = value.select(index)
            elif f.name != "sigmas" and isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
        return replace(self, **picked)


def initial_latents(
    shape: tuple[int, int, int], group_ids: torch.Tensor, generator: torch.Generator, share_within: int | None
) -> torch.Tensor:
    """(B, C, h, w) starting noise. ``share_within``: None for independent noise; k for one
    noise per run of k consecutive rollouts of a group (G: same noise per group; 2: FDFO pairs)."""
    batch = len(group_ids)
    if share_within is None:
        return torch.randn((batch, *shape), generator=generator)
    runs = -(-batch // share_within)
    noise = torch.randn((runs, *shape), generator=generator)
    return noise.repeat_interleave(share_within, dim=0)[:batch]


def trained_steps(sde_steps: list[int] | None, steps: int, train_fraction: float) -> list[int]:
    """The steps the update trains (method §4): of the SDE steps (all ``steps`` by default),
    those among the first ⌊f·T⌋ — Flow-GRPO's ``timestep_fraction``, so at f < 1 the last
    step, whose noise cannot change the image, is never trained."""
    limit = int(train_fraction * steps)
    return [t for t in (sde_steps if sde_steps is not None else range(steps)) if t < limit]


@torch.no_grad()
def sample_rollouts(
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    cond: Conditioning,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    noise_level: float,
    guidance_scale: float,
    generator: torch.Generator,
    capture: AttentionCapture | None = None,
    core_mask: torch.Tensor | None = None,
    keep_velocities: bool = False,
    sde_steps: list[int] | None = None,
    deterministic: bool = False,
) -> dict[str, torch.Tensor | None]:
    """Run the SDE sampler from ``noise`` (B, C, h, w) through ``sigmas`` (T + 1,).

    At each step the guided velocity gives the Gaussian transition of method §1; its sample is
    the next state and its per-element log-density is kept. With ``capture`` the conditional
    branch records the core attention (method §3.2). With ``sde_steps`` only those steps add
    noise; the others take the ODE step and get zero log-probs (never trained: method §1).
    ``deterministic``: the ODE sampler of evaluation at every step, keeping only the final
    latent and no log-probs (the forward-process objectives, method §6.1–§6.2).
    Returns the tensor fields of ``Rollouts``.
    """
    device, dtype = noise.device, noise.dtype
    x = noise
    states, log_probs, velocities, attention = [x], [], [], []
    for t in range(len(sigmas) - 1):
        recording = capture.recording(core_mask) if capture is not None else None
        v = guided_velocity(transformer, x, sigmas[t], cond, guidance_scale, recording=recording)
        if capture is not None:
            attention.append(capture.result().cpu())
        if not deterministic and (sde_steps is None or t in sde_steps):
            dist = step_distribution(x, v, sigmas[t], sigmas[t + 1], sigmas[1], noise_level)
            x = dist.sample(torch.randn(x.shape, generator=generator).to(device, dtype))
            log_probs.append(dist.log_prob(x))
        else:
            x = step_distribution(x, v, sigmas[t], sigmas[t + 1], sigmas[1], 0.0).mean
            if not deterministic:
                log_probs.append(torch.zeros_like(x))
        if not deterministic:  # ODE rollouts keep the final state only
            states.append(x)
        if keep_velocities:
            velocities.append(v)
    return {
        "latents": x[:, None] if deterministic else torch.stack(states, dim=1),
        "log_probs": None if deterministic else torch.stack(log_probs, dim=1),
        "velocities": torch.stack(velocities, dim=1) if keep_velocities else None,
        "attention": torch.stack(attention, dim=1) if capture is not None else None,
        "images": images_from_latents(vae, x).cpu(),
    }
