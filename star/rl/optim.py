"""Optimizers of the RL trainer: AdamW, or steps of fixed length along the gradient (method §4.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch


class NormalizedSGD(torch.optim.Optimizer):
    """θ ← θ − lr · g / ‖g‖ − lr · wd · θ, with ‖g‖ the norm over *all* parameters.

    Every step moves the parameters by ``lr`` in L2 norm along the (accumulated) gradient
    itself. A policy gradient estimated from a few thousand rollouts is mostly noise spread over
    every coordinate; Adam's per-coordinate scaling amplifies those coordinates, a step along the
    whole gradient keeps the direction the signal gives it (method §4.1). The norm is taken
    jointly across parameter groups so that the step is one direction in parameter space.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"NormalizedSGD lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"NormalizedSGD weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None if closure is None else torch.enable_grad()(closure)()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return loss
        # one host sync per step, not one per parameter
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        if norm == 0:  # no signal (e.g. every group dropped): stay put rather than divide by zero
            return loss
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(p.grad, alpha=-group["lr"] / norm)
        return loss


def build_optimizer(
    name: Literal["adamw", "normalized_sgd"], params: list[torch.Tensor], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The trainer's optimizer by its config name (``train.optimizer``)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "normalized_sgd":
        return NormalizedSGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"train.optimizer: unknown optimizer {name!r} (adamw | normalized_sgd)")
