"""How much of a training batch's gradient is signal, for many objectives on the same rollouts
(docs/method.md §4.1).

Several independent estimates g₁ … g_k of each objective's gradient at the same weights: with
g = s + n (signal, batch noise), the mean pairwise cos(g_a, g_b) ≈ |s|² / (|s|² + |n|²) of one
estimate. Every objective of an estimate sees the same rollouts and rewards, so its cosine with a
reference objective's gradient (Flow-GRPO's ``none``) says how different the update is; one
forward pass per minibatch and step serves every objective (a backward pass each).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from star.method.regions import mean_localisation
from star.rl.objectives import Objective
from star.sampling.rollout import Rollouts

if TYPE_CHECKING:  # annotations only
    from star.rl.prompt_source import Record
    from star.rl.trainer import Trainer


def _mean_sem(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (NaN with fewer than two values)."""
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) of flat vectors; 0 when either vanishes (no group had reward spread)."""
    if a.norm() == 0 or b.norm() == 0:
        return 0.0
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


@dataclass
class GradientRow:
    """One objective over k estimates: ``pairwise`` the k(k−1)/2 cosines between estimates,
    ``with_reference`` the k cosines with the reference objective on the same rollouts,
    ``norms`` the k gradient norms, ``localisation`` the k mean localisations of its weights on
    the core objects (NaN where it has no maps or the reward cannot locate)."""

    name: str
    pairwise: list[float] = field(default_factory=list)
    with_reference: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    localisation: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    @property
    def agreement(self) -> tuple[float, float]:
        """Mean pairwise cosine ± its standard error (the pairs share estimates, so the error is
        a rough guide; compare means across rows measured on the same estimates)."""
        return _mean_sem(self.pairwise)

    @property
    def reference(self) -> tuple[float, float]:
        return _mean_sem(self.with_reference)


def objective_gradients(
    trainer: Trainer,
    rollouts: Rollouts,
    rewards: torch.Tensor,
    objectives: dict[str, Objective],
    generator: torch.Generator,
) -> dict[str, tuple[torch.Tensor, float]]:
    """Each objective's gradient summed over ``rollouts``' trained steps at the trainer's
    weights (no optimizer step), flattened over the trainable parameters (n_params,), with the
    mean localisation of its allocation weights (NaN without maps or coverage).

    The policy terms only: the KL term's gradient vanishes at the base weights, where this is
    measured. Groups without reward spread contribute nothing, as in training. Objectives that
    draw their own timesteps (the forward-process ones) take their whole ``step_loss`` at each
    of them (a forward pass each; their velocity-L2 terms vanish at the base weights too).
    """
    targets = {name: objective.prepare(rollouts, rewards, generator) for name, objective in objectives.items()}
    totals = {name: [torch.zeros_like(p) for p in trainer.params] for name in objectives}
    minibatch = trainer.train_cfg.minibatch_size
    trainer.transformer.train()

    def accumulate(name: str, loss: torch.Tensor, size: int, retain_graph: bool = False) -> None:
        grads = torch.autograd.grad(loss, trainer.params, retain_graph=retain_graph, allow_unused=True)
        for total, grad in zip(totals[name], grads):
            if grad is not None:
                total += grad * size

    for chunk in torch.arange(len(rollouts)).split(minibatch):
        part = rollouts.select(chunk)
        for name, objective in objectives.items():
            drawn = targets[name].timesteps
            for k in range(drawn.shape[1] if drawn is not None else 0):
                accumulate(name, objective.step_loss(trainer.policy, part, targets[name].select(chunk), k)[0],
                           len(chunk))
        shared = {name: o for name, o in objectives.items() if targets[name].timesteps is None}
        for t in rollouts.trained if shared else []:
            velocity = trainer.policy.velocity(part.latents[:, t], part.sigmas[t], part.cond)
            for position, (name, objective) in enumerate(shared.items()):
                loss = objective.policy_term(trainer.policy, velocity, part, targets[name].select(chunk), t).loss
                accumulate(name, loss, len(chunk), retain_graph=position < len(shared) - 1)
    trainer.transformer.eval()
    result = {}
    for name in objectives:
        weights, localisation = targets[name].weights, float("nan")
        if weights is not None and rollouts.core_coverage is not None:
            localisation = float(mean_localisation(weights, rollouts.core_coverage)[rollouts.trained].nanmean())
        result[name] = (torch.cat([g.flatten() for g in totals[name]]), localisation)
    return result


@contextmanager
def sampling_for(trainer: Trainer, objective: Objective) -> Iterator[None]:
    """The trainer samples as ``objective`` needs (shared noise of FDFO's pairs, velocities, the
    ODE sampler); an objective with old weights finds them equal to the current ones, as at its
    first iteration."""
    kept, kept_old = trainer.objective, trainer.policy.old
    trainer.objective = objective
    if objective.old_policy is not None and kept_old is None:
        trainer.policy.old = nullcontext
    try:
        yield
    finally:
        trainer.objective, trainer.policy.old = kept, kept_old


def gradient_table(
    trainer: Trainer,
    records: list[Record],
    objectives: dict[str, Objective],
    reference: str,
    estimates: int = 6,
    batches: int = 2,
    seed: int = 1,
    progress: bool = True,
    on_estimate: Callable[[int], None] | None = None,
) -> list[GradientRow]:
    """``estimates`` independent gradient estimates of every objective, each summed over
    ``batches`` batches of G rollouts per record (seeds ``seed`` … ``seed + estimates − 1``).

    Objectives that sample alike share rollouts; one that samples differently (FDFO's paired
    noise) gets its own, and the reference objective's gradient is recomputed on them, so every
    ``with_reference`` cosine compares the same rollouts. On ODE rollouts (the forward-process
    objectives) the policy-gradient reference has no log-probs: those rows get no such cosine.
    ``trainer`` must capture attention and locate core objects if any objective needs it (build
    it with a capturing allocation).
    """
    if estimates < 2:
        raise ValueError(f"gradient_table needs at least two estimates, got {estimates}")
    if reference not in objectives:
        raise ValueError(f"reference objective {reference!r} is not among {sorted(objectives)}")
    groups: dict[tuple[str, bool], dict[str, Objective]] = {}
    for name, objective in objectives.items():
        key = (objective.noise_share, objective.needs_velocities, objective.rollout)
        groups.setdefault(key, {})[name] = objective
    rows = {name: GradientRow(name) for name in objectives}
    gradients: dict[str, list[torch.Tensor]] = {name: [] for name in objectives}
    for estimate in tqdm(range(estimates), desc="gradient estimates", disable=not progress):
        for members in groups.values():
            comparable = next(iter(members.values())).rollout == objectives[reference].rollout
            measured = members | ({reference: objectives[reference]} if comparable else {})
            sums: dict[str, torch.Tensor] = {}
            localisations: dict[str, list[float]] = {name: [] for name in measured}
            rewards_seen: list[float] = []
            trainer.generator.manual_seed(seed + estimate)
            with sampling_for(trainer, next(iter(members.values()))):
                for _ in range(batches):
                    rollouts = trainer.sample(records)
                    rewards = trainer.score(rollouts)
                    rewards_seen.append(rewards.float().mean().item())
                    gradients_of = objective_gradients(trainer, rollouts, rewards, measured, trainer.generator)
                    for name, (grad, loc) in gradients_of.items():
                        sums[name] = sums[name] + grad if name in sums else grad
                        localisations[name].append(loc)
            for name in members:
                if comparable:
                    rows[name].with_reference.append(cosine(sums[name], sums[reference]))
                rows[name].norms.append(sums[name].norm().item())
                rows[name].localisation.append(statistics.fmean(localisations[name]))
                rows[name].rewards.append(statistics.fmean(rewards_seen))
                gradients[name].append(sums[name])
        if on_estimate:
            on_estimate(estimate)
    for name, estimates_of in gradients.items():
        rows[name].pairwise = [
            cosine(estimates_of[a], estimates_of[b])
            for a in range(len(estimates_of)) for b in range(a + 1, len(estimates_of))
        ]
    return list(rows.values())
