"""DGPO (docs/method.md §6.2), as Luo-Yihong/DGPO's ``scripts/train_sd3_dgpo.py`` implements it.

Rollouts come from the deterministic sampler (the current weights, or the EMA reference after
``switch_ema_ref`` optimizer steps); only the final latent is kept. At grid points of the
high-noise end, shared by every rollout, each prompt group shares one ε. Per rollout the
denoising errors ℓ_θ (trained), ℓ_ref (base) and ℓ_old (EMA) are compared: a group's weight
w_g = σ(Σ_i Â_i β (ℓ_θ,i − ℓ_ref,i) / G) makes mean(w Â ℓ_θ) the gradient of the group-level
DPO loss −log σ(R(G⁺) − R(G⁻)), and a PPO-style clip on exp(ℓ_old − ℓ_θ) stops rollouts that
moved too far. An allocation map weights every per-element error (method §6.3).
"""

from __future__ import annotations

import torch

from star.config import DgpoConfig
from star.method.allocation import AllocationMode, AllocationParams
from star.rl.advantages import group_advantages
from star.rl.forward_process import ForwardProcessObjective, weighted_mean
from star.rl.objectives import OldPolicySchedule, Policy, Targets
from star.sampling.rollout import Rollouts


def group_weights(advantages: torch.Tensor, loss: torch.Tensor, reference_loss: torch.Tensor,
                  group_ids: torch.Tensor, beta: float, group_size: int) -> torch.Tensor:
    """w_g(i) = σ(Σ_{j∈g(i)} Â_j β (ℓ_θ,j − ℓ_ref,j) / G), stop-grad (method §6.2). All (B,) -> (B,)."""
    terms = (advantages * beta * (loss - reference_loss) / group_size).detach()
    _, group = group_ids.unique(return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1, dtype=terms.dtype, device=terms.device)
    sums = sums.index_add(0, group.to(terms.device), terms)
    return torch.sigmoid(sums[group.to(terms.device)])


def clipped_mask(advantages: torch.Tensor, ratio: torch.Tensor, clip: float) -> torch.Tensor:
    """(B,) bool: rollouts whose ratio left the trust region in their advantage's direction
    (Â > 0 and ρ > 1 + ε, or Â < 0 and ρ < 1 − ε); their ℓ_θ gives no gradient."""
    return ((advantages > 0) & (ratio > 1 + clip)) | ((advantages < 0) & (ratio < 1 - clip))


def dgpo_loss(advantages: torch.Tensor, loss: torch.Tensor, reference_loss: torch.Tensor, old_loss: torch.Tensor,
              group_ids: torch.Tensor, beta: float, group_size: int, clip: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """mean_i[w_g(i) Â_i ℓ̃_θ,i] with ℓ̃_θ,i = sg(ℓ_θ,i) where clipped (method §6.2). All inputs
    (B,); returns the scalar loss and the (B,) clipped mask."""
    ratio = torch.exp(old_loss - loss.detach())
    clipped = clipped_mask(advantages, ratio, clip)
    kept = torch.where(clipped, loss.detach(), loss)
    weight = group_weights(advantages, loss, reference_loss, group_ids, beta, group_size)
    return (weight * advantages * kept).mean(), clipped


class DgpoObjective(ForwardProcessObjective):
    """DGPO with allocation ``mode`` over its per-element errors (method §6.2, §6.3)."""

    whole_groups = True  # the group weight sums over a whole prompt group

    def __init__(self, cfg: DgpoConfig, mode: AllocationMode, allocation: AllocationParams, patch_size: int,
                 group_size: int, global_std: bool = False, advantage_clip: float = 5.0) -> None:
        super().__init__(mode, allocation, patch_size, global_std, advantage_clip)
        self.cfg, self.group_size = cfg, group_size
        self.old_policy = OldPolicySchedule(cfg.old_policy, update="optimizer_step", sample_after=cfg.switch_ema_ref)

    def trained_steps(self, steps: int) -> list[int]:
        """The grid indices 0..trunc_steps (the high-noise end) the draws come from."""
        return list(range(min(self.cfg.trunc_steps + 1, steps)))

    def prepare(self, rollouts: Rollouts, rewards: torch.Tensor, generator: torch.Generator | None = None) -> Targets:
        """Advantages; ``timesteps`` grid indices drawn without replacement, the same for every
        rollout; one ε per prompt group and index; the allocation maps."""
        advantages = group_advantages(rewards, rollouts.group_ids, self.global_std, self.advantage_clip)
        candidates = self.trained_steps(len(rollouts.sigmas) - 1)
        order = torch.randperm(len(candidates), generator=generator)[: self.cfg.timesteps]
        timesteps = torch.tensor(candidates)[order].expand(len(rollouts), -1).clone()
        final = rollouts.latents[:, -1]
        _, group = rollouts.group_ids.unique(return_inverse=True)
        shared = torch.randn((int(group.max()) + 1, len(order), *final.shape[1:]), generator=generator)
        weights = self.maps(rollouts, candidates, generator)
        keep = torch.ones(len(rollouts), dtype=torch.bool)
        return Targets(advantages, keep, weights, timesteps=timesteps, noise=shared[group.cpu()])

    def step_loss(
        self, policy: Policy, rollouts: Rollouts, targets: Targets, k: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss at the k-th drawn grid point for whole prompt groups, plus the velocity L2 to the base."""
        at = self.grid_point(rollouts, targets, k)
        target = at.noise - at.final
        v_old = policy.old_velocity(at.x_t, at.sigma, rollouts.cond)  # before v_θ: the swap writes weights in place
        v_ref = policy.reference_velocity(at.x_t, at.sigma, rollouts.cond, 1.0)
        v_theta = policy.conditional_velocity(at.x_t, at.sigma, rollouts.cond)
        loss_theta = weighted_mean((target - v_theta) ** 2, at.weights)
        loss_ref = weighted_mean((target - v_ref) ** 2, at.weights)
        loss_old = weighted_mean((target - v_old) ** 2, at.weights)
        advantages = targets.advantages.to(at.x_t)
        policy_loss, clipped = dgpo_loss(advantages, loss_theta, loss_ref, loss_old, rollouts.group_ids,
                                         self.cfg.beta_dpo, self.group_size, self.cfg.clip_range)
        kl = ((v_theta - v_ref) ** 2).mean(dim=(1, 2, 3)).mean()
        loss = policy_loss + self.cfg.kl_beta * kl
        stats = {"policy_loss": policy_loss.detach(), "kl": kl.detach(), "clip_fraction": clipped.float().mean(),
                 "denoising_gap": (loss_theta - loss_ref).detach().mean()}
        return loss, stats
