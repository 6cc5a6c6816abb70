"""DiffusionNFT (docs/method.md §6.1), as NVlabs/DiffusionNFT's ``scripts/train_nft_sd3.py`` implements it.

Rollouts come from the old adapter through the deterministic sampler; only the final latent is
kept. Each rollout's reward becomes an optimality probability r; at a grid point the trained
velocity v_θ and the old one v_old form an implicit positive policy v⁺ = β v_θ + (1 − β) v_old
and a negative one v⁻ = (1 + β) v_old − β v_θ, and the loss pulls v⁺'s data prediction to the
sample with weight r and v⁻'s with weight 1 − r. An allocation map weights the per-element
errors (method §6.3).
"""

from __future__ import annotations

import torch

from star.config import NftConfig
from star.method.allocation import AllocationMode, AllocationParams
from star.rl.advantages import group_advantages
from star.rl.forward_process import ForwardProcessObjective, weighted_mean
from star.rl.objectives import OldPolicySchedule, Policy, Targets
from star.sampling.rollout import Rollouts

NORMALISER_FLOOR = 1e-5


def optimality(advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """r = clamp(Â / (2·clip) + ½, 0, 1): Â = 0 → ½, Â = ±clip → 1 / 0 (method §6.1). (B,) -> (B,)."""
    return (advantages / (2 * clip) + 0.5).clamp(0, 1)


def normalised_error(estimate: torch.Tensor, final: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """ℓ = mean(M ⊙ (x̂ − x_0)²) / sg(max(mean|x̂ − x_0|, 1e-5)) per rollout (method §6.1): (B,).

    The normaliser stays unweighted, so a map's scale across steps and rollouts (``temporal``,
    ``star``'s τ) survives; a weighted one would cancel any spatially uniform factor."""
    error = estimate - final
    with torch.no_grad():
        scale = error.abs().double().mean(dim=(1, 2, 3)).clamp_min(NORMALISER_FLOOR).to(error)
    return weighted_mean(error**2, weights) / scale


def nft_loss(
    v_theta: torch.Tensor, v_old: torch.Tensor, x_t: torch.Tensor, final: torch.Tensor, sigma: torch.Tensor,
    r: torch.Tensor, beta: float, clip: float, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """clip · mean_B[(r ℓ⁺ + (1 − r) ℓ⁻) / β] (method §6.1). Velocities, x_t, final: (B, C, h, w);
    sigma, r: (B,); weights: (B, 1, h, w) or None. Returns a scalar."""
    s = sigma.to(x_t)[:, None, None, None]
    v_old = v_old.detach()
    positive = x_t - s * (beta * v_theta + (1 - beta) * v_old)
    negative = x_t - s * ((1 + beta) * v_old - beta * v_theta)
    loss_pos = normalised_error(positive, final, weights)
    loss_neg = normalised_error(negative, final, weights)
    return clip * ((r * loss_pos + (1 - r) * loss_neg) / beta).mean()


class NftObjective(ForwardProcessObjective):
    """DiffusionNFT with allocation ``mode`` over its per-element errors (method §6.1, §6.3)."""

    def __init__(self, cfg: NftConfig, mode: AllocationMode, allocation: AllocationParams, patch_size: int,
                 global_std: bool = True, advantage_clip: float = 5.0) -> None:
        super().__init__(mode, allocation, patch_size, global_std, advantage_clip)
        self.cfg = cfg
        self.old_policy = OldPolicySchedule(cfg.old_policy, update="iteration", sample_after=0)

    def trained_steps(self, steps: int) -> list[int]:
        """Every grid point may be trained (each rollout draws its own subset)."""
        return list(range(steps))

    def prepare(self, rollouts: Rollouts, rewards: torch.Tensor, generator: torch.Generator | None = None) -> Targets:
        """Advantages (per-prompt mean, batch std, clipped); per rollout ⌊f·T⌋ grid points in
        random order and a fresh ε for each; the allocation maps. Every rollout trains: at
        r = ½ the two branches pull v_θ toward v_old, a regulariser the reference keeps."""
        advantages = group_advantages(rewards, rollouts.group_ids, self.global_std, self.advantage_clip)
        steps = len(rollouts.sigmas) - 1
        count = max(1, int(steps * self.cfg.timestep_fraction))
        timesteps = torch.stack([torch.randperm(steps, generator=generator)[:count] for _ in range(len(rollouts))])
        final = rollouts.latents[:, -1]
        noise = torch.randn((len(rollouts), count, *final.shape[1:]), generator=generator)
        weights = self.maps(rollouts, self.trained_steps(steps), generator)
        keep = torch.ones(len(rollouts), dtype=torch.bool)
        return Targets(advantages, keep, weights, timesteps=timesteps, noise=noise)

    def step_loss(
        self, policy: Policy, rollouts: Rollouts, targets: Targets, k: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss at each rollout's k-th drawn grid point, plus the velocity L2 to the base."""
        at = self.grid_point(rollouts, targets, k)
        v_old = policy.old_velocity(at.x_t, at.sigma, rollouts.cond)  # before v_θ: the swap writes weights in place
        v_ref = policy.reference_velocity(at.x_t, at.sigma, rollouts.cond, 1.0) if self.cfg.kl_beta > 0 else None
        v_theta = policy.conditional_velocity(at.x_t, at.sigma, rollouts.cond)
        r = optimality(targets.advantages.to(at.x_t), self.advantage_clip)
        policy_loss = nft_loss(v_theta, v_old, at.x_t, at.final, at.sigma, r, self.cfg.beta, self.advantage_clip,
                               at.weights)
        kl = torch.zeros(()) if v_ref is None else ((v_theta - v_ref) ** 2).mean(dim=(1, 2, 3)).mean()
        loss = policy_loss + self.cfg.kl_beta * kl
        stats = {"policy_loss": policy_loss.detach(), "kl": kl.detach(),
                 "optimality_mean": r.mean(), "old_gap": ((v_theta.detach() - v_old) ** 2).mean()}
        return loss, stats
