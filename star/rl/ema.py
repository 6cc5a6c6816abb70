"""Exponential moving average of a module's trainable parameters (the base's and the trained
adapter's saved weights): diffusers' ``EMAModel`` with the platform's warm-up and update rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from diffusers.training_utils import EMAModel


class EMA(EMAModel):
    """Shadow copies θ_ema ← d θ_ema + (1 − d) θ of the parameters of ``module`` that require grad.

    diffusers keeps the shadow weights, ``store``/``restore``, ``copy_to`` and the state dict.
    Two things stay the platform's own, so that the committed base and checkpoints stay bit for
    bit what they are (docs/method.md §0, EMA): the warm-up d_n = min(d, n / (9 + n)) at the n-th
    update (diffusers' own is the same one update later, its first update copies the weights),
    and the update through ``torch.lerp`` (diffusers' s − (1 − d)(s − θ) rounds differently, by
    up to 1e-7 after 20 updates)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.trained = [p for p in module.parameters() if p.requires_grad]
        super().__init__(self.trained, decay=decay)

    def get_decay(self, optimization_step: int) -> float:
        """d_n = min(d, n / (9 + n)): short runs do not keep the initial weights (with a constant
        0.998, 1 200 steps would still hold 9 % of them)."""
        return min(self.decay, optimization_step / (9 + optimization_step))

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter] | None = None) -> None:
        """One update toward ``parameters`` (default: the module's trainable parameters)."""
        self.optimization_step += 1
        decay = self.cur_decay_value = self.get_decay(self.optimization_step)
        for shadow, param in zip(self.shadow_params, self.trained if parameters is None else parameters, strict=True):
            shadow.lerp_(param.detach(), 1 - decay)

    def copy_to(self, parameters: Iterable[torch.nn.Parameter] | None = None) -> None:
        """Overwrite ``parameters`` (default: the module's trainable parameters) with the averages."""
        super().copy_to(self.trained if parameters is None else parameters)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict``, the shadow weights on the devices of the module's parameters."""
        saved = state_dict.get("shadow_params")
        if saved is None or len(saved) != len(self.trained):
            raise KeyError(f"EMA state holds {0 if saved is None else len(saved)} tensors, "
                           f"this module trains {len(self.trained)}")
        super().load_state_dict(state_dict)
        self.shadow_params = [shadow.to(param.device) for shadow, param in zip(self.shadow_params, self.trained)]
