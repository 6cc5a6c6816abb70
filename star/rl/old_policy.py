"""The old (EMA) adapter beside the trained one, for the forward-process objectives (docs/method.md §6.1–§6.2).

DiffusionNFT samples its rollouts with it and mixes its velocity into the implicit policies;
DGPO clips against it. It is diffusers' ``EMAModel`` of the trained parameters with the
methods' own decay schedule: d = 0 for the first ``delay`` optimizer steps, then
min(rate · (s − delay), cap), so early on the old adapter follows the trained one and later it
lags as a slow average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.training_utils import EMAModel

from star.config import OldPolicyConfig


def old_decay(schedule: OldPolicyConfig, optimizer_steps: int) -> float:
    """d(s) of the schedule after s optimizer steps (DiffusionNFT's decay types 1 and 2, DGPO's)."""
    if optimizer_steps < schedule.delay:
        return 0.0
    return min(schedule.rate * (optimizer_steps - schedule.delay), schedule.cap)


class OldPolicy(EMAModel):
    """θ_old ← d θ_old + (1 − d) θ over ``parameters`` (the trainable ones), d from the schedule
    at the trainer's optimizer-step count, which ``advance`` is given (the schedule counts
    optimizer steps whether the update runs after each of them or once per iteration)."""

    def __init__(self, parameters: list[torch.nn.Parameter], schedule: OldPolicyConfig) -> None:
        super().__init__(parameters, decay=schedule.cap)
        self.schedule = schedule
        self.trained = parameters

    def get_decay(self, optimization_step: int) -> float:
        return old_decay(self.schedule, optimization_step)

    def advance(self, optimizer_steps: int) -> None:
        """One update at d(optimizer_steps)."""
        self.optimization_step = optimizer_steps - 1  # EMAModel.step counts one up before reading the decay
        self.step(self.trained)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The old weights in the model inside the block, the trained ones again after it. The
        swap writes through ``.data``: call it before the trained forward whose graph the
        backward pass will read."""
        self.store(self.trained)
        self.copy_to(self.trained)
        try:
            yield
        finally:
            self.restore(self.trained)

    def state(self) -> dict[str, Any]:
        """The shadow weights and the step count, cloned (a checkpoint must not alias them)."""
        return {"shadow": [p.detach().clone() for p in self.shadow_params], "step": self.optimization_step}

    def load(self, state: dict[str, Any]) -> None:
        if len(state["shadow"]) != len(self.shadow_params):
            raise KeyError(f"old-policy state holds {len(state['shadow'])} tensors, this model trains "
                           f"{len(self.shadow_params)}")
        for shadow, saved in zip(self.shadow_params, state["shadow"]):
            shadow.copy_(saved)
        self.optimization_step = int(state["step"])
