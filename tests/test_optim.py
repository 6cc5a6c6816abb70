"""The normalised-gradient optimizer: a step of length lr along the joint gradient."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from star.models.lora import trainable_state
from star.rl.optim import NormalizedSGD, build_optimizer
from tests.test_trainer import _trainer


def _params_with_grads() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    for p in params:
        p.grad = torch.randn_like(p) * 7
    return params


def test_step_has_length_lr_along_the_joint_gradient() -> None:
    params = _params_with_grads()
    before = torch.cat([p.detach().flatten().clone() for p in params])
    grad = torch.cat([p.grad.flatten() for p in params])
    # two groups: the norm is over both, so the step is one direction, not one per group
    NormalizedSGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.3).step()
    delta = torch.cat([p.detach().flatten() for p in params]) - before
    assert delta.norm().item() == pytest.approx(0.3, rel=1e-5)
    assert torch.allclose(delta, -0.3 * grad / grad.norm(), atol=1e-6)


def test_weight_decay_is_decoupled_and_a_zero_gradient_stays_put() -> None:
    params = _params_with_grads()
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad.zero_()
    NormalizedSGD(params, lr=0.3, weight_decay=0.1).step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    params[1].grad = None  # parameters without a gradient are skipped, not decayed
    params[0].grad = torch.ones_like(params[0])
    NormalizedSGD(params, lr=0.3, weight_decay=0.1).step()
    expected = before[0] * (1 - 0.03) - 0.3 / 12**0.5
    assert torch.allclose(params[0], expected, atol=1e-6) and torch.equal(params[1], before[1])


def test_build_optimizer_names_the_knob_on_an_unknown_name() -> None:
    params = _params_with_grads()
    assert isinstance(build_optimizer("adamw", params, 1e-3, 0.0), torch.optim.AdamW)
    assert isinstance(build_optimizer("normalized_sgd", params, 1e-3, 0.0), NormalizedSGD)
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer("lion", params, 1e-3, 0.0)  # type: ignore[arg-type]


def test_trainer_moves_the_adapters_by_lr_per_optimizer_step(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, optimizer="normalized_sgd", lr=0.05, weight_decay=0.0, iterations=1,
                       minibatch_size=4, ema_decay=0.0)
    before = trainable_state(trainer.transformer)
    metrics = trainer.step()  # one minibatch of 4 rollouts: one optimizer step
    after = trainable_state(trainer.transformer)
    moved = torch.cat([(after[k] - before[k]).flatten() for k in before]).norm().item()
    assert metrics["grad_norm"] > 0 and moved == pytest.approx(0.05, rel=1e-4)
