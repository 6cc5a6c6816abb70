"""Exponential moving average of a module's trainable parameters."""

from __future__ import annotations

import torch


class EMA:
    """Shadow copies θ_ema ← d θ_ema + (1 − d) θ of the parameters that require grad."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """One step with decay min(d, (1 + n) / (10 + n)): short runs do not keep the
        initial weights (with a constant 0.998, 1200 steps would still hold 9% of them)."""
        self.updates += 1
        decay = min(self.decay, self.updates / (9 + self.updates))
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Overwrite the module's parameters with the averages."""
        for name, p in module.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {**self.shadow, "__updates__": self.updates}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        state = dict(state)
        self.updates = int(state.pop("__updates__", 0))
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
