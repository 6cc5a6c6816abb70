"""Training objectives behind one interface (docs/method.md §2–§6).

An ``Objective`` turns scored rollouts into per-rollout training targets (``prepare``: the
advantage step of the loop) and gives the loss of one denoising step of a minibatch
(``step_loss``). ``PolicyGradientObjective`` is Flow-GRPO (allocation ``none``), STAR and its
ablations; ``FdfoObjective`` is the finite-difference paired-trajectory method; the
forward-process objectives (DiffusionNFT, DGPO) live in ``star.rl.nft`` and ``star.rl.dgpo``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from star.config import OldPolicyConfig
from star.method.allocation import CAPTURING_MODES, AllocationInputs, AllocationMode, AllocationParams, allocate
from star.rl.advantages import group_advantages, informative_groups
from star.sampling.rollout import Rollouts
from star.sampling.sampler import Conditioning, guided_velocity
from star.sampling.sde import StepDistribution, step_distribution


@dataclass
class Policy:
    """The trained velocity model and its frozen reference, both with CFG (method §1).

    ``model`` is what gradients flow through (possibly wrapped for data parallelism);
    ``reference`` is a context in which ``reference_model`` computes the base weights' velocity
    (LoRA: adapters disabled; full fine-tuning: a frozen copy and a null context); ``old`` is a
    context in which ``model`` holds the old (EMA) weights, for objectives that keep them.
    """

    model: torch.nn.Module
    reference_model: torch.nn.Module
    reference: Callable[[], AbstractContextManager[object]]
    guidance_scale: float
    noise_level: float
    old: Callable[[], AbstractContextManager[object]] | None = None

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return guided_velocity(self.model, x, sigma, cond, self.guidance_scale)

    def conditional_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The trained model's velocity without guidance (the forward-process objectives train it)."""
        return guided_velocity(self.model, x, sigma, cond, 1.0)

    @torch.no_grad()
    def reference_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, guidance_scale: float | None = None
    ) -> torch.Tensor:
        """The base weights' velocity, at the rollouts' guidance unless ``guidance_scale`` is given."""
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        with self.reference():
            return guided_velocity(self.reference_model, x, sigma, cond, scale)

    @torch.no_grad()
    def old_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The old (EMA) weights' conditional velocity; call before the trained forward (the swap
        writes the weights in place)."""
        if self.old is None:
            raise RuntimeError("this policy keeps no old weights (the objective declares no old_policy)")
        with self.old():
            return guided_velocity(self.model, x, sigma, cond, 1.0)

    def transition(self, velocity: torch.Tensor, x: torch.Tensor, sigmas: torch.Tensor, t: int) -> StepDistribution:
        return step_distribution(x, velocity, sigmas[t], sigmas[t + 1], sigmas[1], self.noise_level)


@dataclass
class Targets:
    """Per-rollout training targets. advantages: (B,) Â or FDFO's dR; keep: (B,) bool;
    weights: (B, T, P) allocation or None; directions: (B, C, h, w) FDFO's dx or None;
    timesteps: (B, K) grid indices the objective trains, position k of ``step_loss`` reading
    column k (forward-process objectives; None: the rollouts' ``trained`` steps);
    noise: (B, K, C, h, w) the forward process's ε for each of them, or None."""

    advantages: torch.Tensor
    keep: torch.Tensor
    weights: torch.Tensor | None = None
    directions: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    noise: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> Targets:
        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[index]

        return Targets(self.advantages[index], self.keep[index], pick(self.weights), pick(self.directions),
                       pick(self.timesteps), pick(self.noise))


RolloutKind = Literal["sde", "ode"]
"""'sde': stochastic steps with per-element log-probs, every state kept (policy gradient, FDFO);
'ode': the deterministic sampler, only the final latent kept (forward-process objectives)."""


@dataclass(frozen=True)
class OldPolicySchedule:
    """The old (EMA) weights an objective keeps: its decay ``schedule``; ``update`` after every
    optimizer step (read at the count before it, as DGPO) or once per iteration (at the count
    so far, as DiffusionNFT); rollouts come from them after ``sample_after`` optimizer steps
    (0: always; None: never)."""

    schedule: OldPolicyConfig
    update: Literal["optimizer_step", "iteration"]
    sample_after: int | None


class Objective(Protocol):
    needs_capture: bool  # rollouts record the core attention (method §3.2)
    needs_regions: bool  # rollouts carry the core objects' coverage of the final image (§3.4)
    needs_velocities: bool
    noise_share: str  # 'none' | 'group' | 'pair': how rollouts share their initial noise
    rollout: RolloutKind  # which sampler draws the rollouts
    old_policy: OldPolicySchedule | None  # old (EMA) weights the trainer keeps for the objective
    whole_groups: bool  # every minibatch holds whole prompt groups (a group-level term)

    def prepare(
        self, rollouts: Rollouts, rewards: torch.Tensor, generator: torch.Generator | None = None
    ) -> Targets: ...

    def policy_term(
        self, policy: Policy, velocity: torch.Tensor, rollouts: Rollouts, targets: Targets, t: int
    ) -> Surrogate: ...

    def step_loss(
        self, policy: Policy, rollouts: Rollouts, targets: Targets, t: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def region_mean(values: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean of (B, C, h, w) over channels and each patch's pixels: (B, P), P = (h/patch)·(w/patch)
    in the transformer's token order (row-major over the patch grid)."""
    b, c, h, w = values.shape
    grid = values.reshape(b, c, h // patch, patch, w // patch, patch)
    return grid.mean(dim=(1, 3, 5)).reshape(b, -1)


def clipped_surrogate(ratio: torch.Tensor, advantage: torch.Tensor, clip: float) -> torch.Tensor:
    """Elementwise −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) (method §4)."""
    return torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1 - clip, 1 + clip))


def kl_to_reference(mean: torch.Tensor, reference_mean: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
    """KL_t = mean ‖μ_θ − μ_ref‖² / (2 σ_t²) per rollout (method §4): (B,)."""
    return ((mean - reference_mean) ** 2).mean(dim=(1, 2, 3)) / (2 * sigma_t.flatten() ** 2)


@dataclass
class Surrogate:
    """The policy term of one step's loss and what is logged about it: loss (scalar); ratio and
    log_ratio: (B,) at image level or (B, P) per region; clip: the ε applied; transition: the
    step's Gaussian under θ (policy gradient only, for the KL term)."""

    loss: torch.Tensor
    ratio: torch.Tensor
    log_ratio: torch.Tensor
    clip: float
    transition: StepDistribution | None = None


def allocation_weights(mode: AllocationMode, params: AllocationParams, patch: int, rollouts: Rollouts,
                       trained_steps: list[int], generator: torch.Generator | None) -> torch.Tensor:
    """(B, T, P) weights of ``mode`` for ``rollouts`` on the P = (h/patch)·(w/patch) patch grid,
    mean 1 over ``trained_steps`` and all positions (method §3.3, §5)."""
    h, w = rollouts.latents.shape[-2:]
    shape = (len(rollouts), len(rollouts.sigmas) - 1, (h // patch) * (w // patch))
    inputs = AllocationInputs(rollouts.attention, rollouts.sigmas, trained_steps, rollouts.core_coverage, generator)
    return allocate(mode, inputs, params, shape)


class PolicyGradientObjective:
    """Flow-GRPO and STAR: group-relative advantages, allocated by ``mode`` (method §3, §5),
    with the clipped objective at image level (``none``) or per region (method §4); one clip
    range ε for both, since a region's log-prob is a mean over its elements as the image's is."""

    needs_velocities = False
    rollout: RolloutKind = "sde"
    old_policy = None
    whole_groups = False

    def __init__(
        self,
        mode: AllocationMode,
        allocation: AllocationParams,
        patch_size: int,
        clip_range: float,
        kl_beta: float,
        global_std: bool = True,
        advantage_clip: float = 5.0,
        same_noise_per_group: bool = False,
    ) -> None:
        self.mode, self.allocation, self.patch = mode, allocation, patch_size
        self.clip_range, self.kl_beta = clip_range, kl_beta
        self.global_std, self.advantage_clip = global_std, advantage_clip
        self.needs_capture = mode in CAPTURING_MODES
        self.needs_regions = mode == "oracle"
        self.noise_share = "group" if same_noise_per_group else "none"

    def prepare(self, rollouts: Rollouts, rewards: torch.Tensor, generator: torch.Generator | None = None) -> Targets:
        advantages = group_advantages(rewards, rollouts.group_ids, self.global_std, self.advantage_clip)
        weights = allocation_weights(self.mode, self.allocation, self.patch, rollouts, rollouts.trained, generator)
        return Targets(advantages, informative_groups(advantages, rollouts.group_ids), weights)

    def policy_term(
        self, policy: Policy, velocity: torch.Tensor, rollouts: Rollouts, targets: Targets, t: int
    ) -> Surrogate:
        """The clipped loss of step t (method §4) given the policy's guided velocity (B, C, h, w)
        at x_t: per-element log-probs of x_{t+1} under θ against the sampling policy's."""
        dist = policy.transition(velocity, rollouts.latents[:, t], rollouts.sigmas, t)
        log_prob, old = dist.log_prob(rollouts.latents[:, t + 1]), rollouts.log_probs[:, t]
        advantage = targets.advantages.to(log_prob)
        if self.mode == "none":
            log_ratio = (log_prob - old).mean(dim=(1, 2, 3))
            ratio = torch.exp(log_ratio)
            loss = clipped_surrogate(ratio, advantage, self.clip_range).mean()
        else:
            assert targets.weights is not None
            log_ratio = region_mean(log_prob, self.patch) - region_mean(old, self.patch)
            ratio = torch.exp(log_ratio)
            allocated = advantage[:, None] * targets.weights[:, t].to(log_prob)
            loss = clipped_surrogate(ratio, allocated, self.clip_range).mean()
        return Surrogate(loss, ratio, log_ratio, self.clip_range, dist)

    def step_loss(
        self, policy: Policy, rollouts: Rollouts, targets: Targets, t: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of step t for the minibatch ``rollouts`` (method §4); stats are detached."""
        x, sigma = rollouts.latents[:, t], rollouts.sigmas[t]
        surrogate = self.policy_term(policy, policy.velocity(x, sigma, rollouts.cond), rollouts, targets, t)
        loss, kl, dist = surrogate.loss, torch.zeros(()), surrogate.transition
        if self.kl_beta > 0:
            assert dist is not None
            ref = policy.transition(policy.reference_velocity(x, sigma, rollouts.cond), x, rollouts.sigmas, t)
            kl = kl_to_reference(dist.mean, ref.mean, dist.sigma_t).mean()
            loss = loss + self.kl_beta * kl
        stats = {
            "policy_loss": surrogate.loss.detach(),
            "kl": kl.detach(),
            "clip_fraction": ((surrogate.ratio.detach() - 1).abs() > surrogate.clip).float().mean(),
            "approx_kl": (0.5 * surrogate.log_ratio.detach() ** 2).mean(),
        }
        return loss, stats


class FdfoObjective:
    """Finite Difference Flow Optimization (method §6): rollouts 2k and 2k + 1 share their
    initial noise; each pair gives a reward difference dR and a sample direction dx, and the
    velocity of every step moves toward the better sample of the pair."""

    needs_capture = False
    needs_regions = False
    needs_velocities = True
    noise_share = "pair"
    rollout: RolloutKind = "sde"
    old_policy = None
    whole_groups = False

    def __init__(self, clip: float, base_weight: float = 0.0) -> None:
        self.clip, self.base_weight = clip, base_weight

    def prepare(self, rollouts: Rollouts, rewards: torch.Tensor, generator: torch.Generator | None = None) -> Targets:
        if len(rollouts) % 2:
            raise ValueError(f"FDFO needs rollouts in pairs; got {len(rollouts)} (make group_size even)")
        final = rollouts.latents[:, -1]
        r1, r2, x1, x2 = rewards[0::2], rewards[1::2], final[0::2], final[1::2]
        d_reward = (r1 - r2).float() / 2
        dx = (x1 - x2) / 2
        dx = dx / dx.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8)
        # branch 2 sees the mirrored pair: −dR and −dx
        advantages = torch.stack([d_reward, -d_reward], dim=1).flatten()
        directions = torch.stack([dx, -dx], dim=1).flatten(0, 1)
        return Targets(advantages, advantages != 0, directions=directions)

    def policy_term(
        self, policy: Policy, velocity: torch.Tensor, rollouts: Rollouts, targets: Targets, t: int
    ) -> Surrogate:
        """loss = −dR·ρ + |dR| / (2·clip)·(ρ − 1)², ρ = exp(ps − ps_ref) (method §6), given the
        policy's guided velocity (B, C, h, w) at x_t."""
        assert rollouts.velocities is not None and targets.directions is not None
        dx = targets.directions.to(velocity)
        target = (rollouts.velocities[:, t] - dx).detach()
        ps = -((velocity - target) ** 2).mean(dim=(1, 2, 3))
        ps_ref = -(dx**2).mean(dim=(1, 2, 3))
        ratio = torch.exp(ps - ps_ref)
        d_reward = targets.advantages.to(velocity)
        loss = (-d_reward * ratio + d_reward.abs() / (2 * self.clip) * (ratio - 1) ** 2).mean()
        return Surrogate(loss, ratio, ps - ps_ref, self.clip)

    def step_loss(
        self, policy: Policy, rollouts: Rollouts, targets: Targets, t: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The policy term (method §6), plus w_b · mean ‖v_θ − v_base‖² when w_b > 0."""
        x, sigma = rollouts.latents[:, t], rollouts.sigmas[t]
        v = policy.velocity(x, sigma, rollouts.cond)
        surrogate = self.policy_term(policy, v, rollouts, targets, t)
        loss = surrogate.loss
        if self.base_weight > 0:
            loss = loss + self.base_weight * ((v - policy.reference_velocity(x, sigma, rollouts.cond)) ** 2).mean()
        stats = {
            "policy_loss": loss.detach(),
            "clip_fraction": ((surrogate.ratio.detach() - 1).abs() > self.clip).float().mean(),
            "approx_kl": (0.5 * surrogate.log_ratio.detach() ** 2).mean(),
        }
        return loss, stats
