"""Group-relative advantages (GRPO, docs/method.md §2)."""

from __future__ import annotations

import torch

STD_EPS = 1e-4


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, global_std: bool = False, clip: float = 5.0
) -> torch.Tensor:
    """Â_i = (r_i − mean_group(r)) / (std + 1e-4), clipped to ±clip (method §2).

    rewards: (B,); group_ids: (B,) integer id of each rollout's prompt group. ``std`` is the
    group's (population) std, or the whole batch's with ``global_std``. Returns (B,).
    """
    if rewards.shape != group_ids.shape or rewards.ndim != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and group ids {tuple(group_ids.shape)} must be equal (B,)")
    advantages = torch.empty_like(rewards, dtype=torch.float32)
    batch_std = rewards.float().std(unbiased=False)
    for group in group_ids.unique():
        members = group_ids == group
        r = rewards[members].float()
        std = batch_std if global_std else r.std(unbiased=False)
        advantages[members] = (r - r.mean()) / (std + STD_EPS)
    return advantages.clamp(-clip, clip)


def informative_groups(advantages: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(B,) bool: rollouts whose group has some non-zero advantage (all-zero groups, e.g. every
    image scored alike, carry no signal and are dropped from the update)."""
    keep = torch.zeros_like(group_ids, dtype=torch.bool)
    for group in group_ids.unique():
        members = group_ids == group
        keep[members] = bool((advantages[members] != 0).any())
    return keep
