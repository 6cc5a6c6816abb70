"""DiffusionNFT and DGPO: each loss against its formula on hand-built tensors, the old adapter's
schedule, allocation over per-element errors, and the trainer running both."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from star.config import OldPolicyConfig, load_config
from star.method.attention import AttentionCapture
from star.models.lora import trainable_state
from star.rl.dgpo import clipped_mask, dgpo_loss, group_weights
from star.rl.forward_process import element_weights, weighted_mean
from star.rl.nft import nft_loss, normalised_error, optimality
from star.rl.old_policy import OldPolicy, old_decay
from star.rl.trainer import Trainer
from star.sampling.rollout import sample_rollouts
from tests.conftest import GENEVAL_RECORDS, MICRO, BrightnessReward, micro_pipeline, straight_and_resumed

SMALL = {"iterations": 3, "prompts_per_iteration": 2, "group_size": 2, "steps": 3, "minibatch_size": 2,
         "checkpoint_every": 1, "accumulation_steps": 1, "allocation": "none"}
DGPO_SMALL = {"algorithm": "dgpo", "dgpo": {"trunc_steps": 2, "timesteps": 2}}


def _tensors(seed: int = 0, batch: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 2, 4, 4)
    return {name: torch.randn(shape, generator=g) for name in ("v_theta", "v_old", "x_t", "final")} | {
        "sigma": torch.rand(batch, generator=g) * 0.9 + 0.05}


def _nft_by_hand(v_theta, v_old, x_t, final, sigma, r, beta, clip):
    """The reference's lines, written out element by element in float64."""
    total = 0.0
    for i in range(len(r)):
        s = float(sigma[i])
        pos = x_t[i].double() - s * (beta * v_theta[i].double() + (1 - beta) * v_old[i].double())
        neg = x_t[i].double() - s * ((1 + beta) * v_old[i].double() - beta * v_theta[i].double())
        lp = ((pos - final[i]) ** 2).mean() / max(float((pos - final[i]).abs().mean()), 1e-5)
        ln = ((neg - final[i]) ** 2).mean() / max(float((neg - final[i]).abs().mean()), 1e-5)
        total += (float(r[i]) * lp + (1 - float(r[i])) * ln) / beta
    return clip * total / len(r)


@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_nft_loss_equals_the_reference_formula(beta: float) -> None:
    t = _tensors()
    r = torch.tensor([0.0, 0.3, 0.5, 1.0])
    loss = nft_loss(t["v_theta"], t["v_old"], t["x_t"], t["final"], t["sigma"], r, beta, 5.0)
    assert float(loss) == pytest.approx(float(_nft_by_hand(**t, r=r, beta=beta, clip=5.0)), rel=1e-5)


def test_nft_r_one_keeps_only_the_positive_branch_and_r_zero_only_the_negative() -> None:
    t = _tensors()
    s = t["sigma"][:, None, None, None]
    positive = t["x_t"] - s * (0.5 * t["v_theta"] + 0.5 * t["v_old"])
    negative = t["x_t"] - s * (1.5 * t["v_old"] - 0.5 * t["v_theta"])
    ones, zeros = torch.ones(4), torch.zeros(4)
    only_pos = nft_loss(t["v_theta"], t["v_old"], t["x_t"], t["final"], t["sigma"], ones, 0.5, 5.0)
    only_neg = nft_loss(t["v_theta"], t["v_old"], t["x_t"], t["final"], t["sigma"], zeros, 0.5, 5.0)
    assert torch.allclose(only_pos, 5.0 * normalised_error(positive, t["final"], None).mean() / 0.5)
    assert torch.allclose(only_neg, 5.0 * normalised_error(negative, t["final"], None).mean() / 0.5)
    assert not torch.allclose(only_pos, only_neg)


def test_nft_optimality_maps_the_clipped_advantage_to_zero_one() -> None:
    r = optimality(torch.tensor([-7.0, -5.0, 0.0, 2.5, 5.0]), 5.0)
    assert r.tolist() == [0.0, 0.0, 0.5, 0.75, 1.0]


def test_nft_normaliser_carries_no_gradient() -> None:
    estimate = torch.randn(2, 2, 4, 4, requires_grad=True)
    final = torch.randn(2, 2, 4, 4)
    normalised_error(estimate, final, None).sum().backward()
    scale = (estimate - final).abs().mean(dim=(1, 2, 3), keepdim=True).detach()
    expected = 2 * (estimate - final).detach() / estimate[0].numel() / scale
    assert torch.allclose(estimate.grad, expected, atol=1e-6)


def test_dgpo_surrogate_gradient_is_the_group_dpo_gradient_over_its_constant() -> None:
    """d/dθ −log σ(R(G⁺) − R(G⁻)), R(G⁺) − R(G⁻) = −(β/G) Σ Â_i (ℓ_θ,i − ℓ_ref,i), equals
    (β/G) · B · d/dθ mean_i[w_g Â_i ℓ_θ,i] for one group of B = G rollouts (no clip)."""
    g = torch.Generator().manual_seed(3)
    advantages = torch.tensor([1.2, -0.4, 0.3, -1.1])
    theta = torch.randn(4, generator=g, requires_grad=True)
    basis = torch.randn(4, 4, generator=g)
    reference = torch.rand(4, generator=g)
    beta, groups = 7.0, torch.zeros(4, dtype=torch.long)

    def losses() -> torch.Tensor:
        return (basis @ theta) ** 2

    preference = -(beta / 4) * (advantages * (losses() - reference)).sum()
    (dpo_grad,) = torch.autograd.grad(-torch.nn.functional.logsigmoid(preference), theta)
    surrogate, clipped = dgpo_loss(advantages, losses(), reference, losses().detach(), groups, beta, 4, clip=1.0)
    (surrogate_grad,) = torch.autograd.grad(surrogate, theta)
    assert not clipped.any()
    assert torch.allclose(dpo_grad, surrogate_grad * beta, rtol=1e-4, atol=1e-6)


def test_dgpo_group_weight_sums_within_each_group_only() -> None:
    advantages = torch.tensor([1.0, -1.0, 2.0, -2.0])
    loss, reference = torch.tensor([0.3, 0.1, 0.5, 0.2]), torch.tensor([0.2, 0.2, 0.1, 0.1])
    groups = torch.tensor([5, 5, 9, 9])
    weights = group_weights(advantages, loss, reference, groups, beta=10.0, group_size=2)
    first = torch.sigmoid(torch.tensor(10.0 * (1.0 * 0.1 + -1.0 * -0.1) / 2))
    second = torch.sigmoid(torch.tensor(10.0 * (2.0 * 0.4 + -2.0 * 0.1) / 2))
    assert torch.allclose(weights, torch.stack([first, first, second, second]))


def test_dgpo_clip_drops_exactly_the_rollouts_past_the_trust_region() -> None:
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0, 1.0])
    ratio = torch.tensor([1.2, 1.05, 0.8, 0.95, 5.0, 0.5])
    assert clipped_mask(advantages, ratio, 0.1).tolist() == [True, False, True, False, False, False]
    loss = torch.full((6,), 0.5, requires_grad=True)
    old_loss = (loss.detach() + torch.log(ratio))  # exp(ℓ_old − ℓ_θ) = ratio
    out, clipped = dgpo_loss(advantages, loss, torch.zeros(6), old_loss, torch.zeros(6, dtype=torch.long),
                             1.0, 6, clip=0.1)
    out.backward()
    assert clipped.tolist() == [True, False, True, False, False, False]
    assert (loss.grad[clipped] == 0).all() and (loss.grad[[1, 3, 5]] != 0).all()


def test_element_weights_put_each_token_on_its_patch_in_row_major_order() -> None:
    weights = torch.zeros(1, 2, 4)  # 2 grid points, a 2x2 token grid
    weights[0, 1, 2] = 1.0  # token 2 = row 1, column 0
    grid = element_weights(weights, torch.tensor([1]), patch=3)
    assert grid.shape == (1, 1, 6, 6)
    assert grid[0, 0, 3:, :3].eq(1).all() and grid.sum() == 9


@pytest.mark.parametrize("objective", ["nft", "dgpo"])
def test_uniform_maps_equal_no_allocation(objective: str) -> None:
    t = _tensors(batch=2)
    ones = element_weights(torch.ones(2, 3, 4), torch.tensor([0, 2]), patch=2)
    if objective == "nft":
        r = torch.tensor([0.2, 0.9])
        args = (t["v_theta"], t["v_old"], t["x_t"], t["final"], t["sigma"], r, 1.0, 5.0)
        assert torch.equal(nft_loss(*args), nft_loss(*args, weights=ones))
    else:
        error = (t["x_t"] - t["v_theta"]) ** 2
        assert torch.equal(weighted_mean(error, None), weighted_mean(error, ones))


def test_old_policy_decay_schedules_of_both_references() -> None:
    nft_geneval = OldPolicyConfig(rate=0.001, cap=0.5)
    nft_ocr = OldPolicyConfig(rate=0.0075, cap=0.999, delay=75)
    dgpo = OldPolicyConfig(rate=0.001, cap=0.3)
    assert [old_decay(nft_geneval, s) for s in (0, 1, 300, 900)] == [0.0, 0.001, 0.3, 0.5]
    assert [old_decay(nft_ocr, s) for s in (74, 75, 76)] == [0.0, 0.0, 0.0075]
    assert old_decay(nft_ocr, 10_000) == 0.999 and old_decay(dgpo, 1_000) == 0.3


def test_old_policy_swaps_weights_in_and_back() -> None:
    layer = torch.nn.Linear(2, 2)
    old = OldPolicy(list(layer.parameters()), OldPolicyConfig(rate=0.25, cap=0.5))
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    old.advance(2)  # d = 0.5
    assert torch.allclose(old.shadow_params[0], start + 0.5)
    with old.applied():
        assert torch.allclose(layer.weight, start + 0.5)
    assert torch.equal(layer.weight, start + 1.0)


def _trainer(tmp: Path, **train: object) -> Trainer:
    cfg = load_config(MICRO, overrides={"train": SMALL | train})
    return Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp, progress=False)


@pytest.mark.slow
def test_one_nft_iteration_moves_the_adapter_and_the_old_one_by_its_schedule(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, algorithm="nft", nft={"old_policy": {"rate": 0.25, "cap": 0.25}})
    before = [p.detach().clone() for p in trainer.params]
    trainer.step()  # one optimizer step, then θ_old ← d θ_old + (1 − d) θ with d = d(1) = 0.25
    after = [p.detach().clone() for p in trainer.params]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    for old, start, now in zip(trainer.old.shadow_params, before, after):
        assert torch.allclose(old, 0.25 * start + 0.75 * now, atol=1e-7)


@pytest.mark.slow
def test_dgpo_copies_the_weights_at_its_first_step_and_trains_whole_groups(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, **DGPO_SMALL, minibatch_size=3, accumulation_steps=2)  # one group per minibatch
    seen: list[list[int]] = []
    step_loss = trainer.objective.step_loss

    def spy(policy, rollouts, targets, k):
        seen.append(rollouts.group_ids.tolist())
        return step_loss(policy, rollouts, targets, k)

    trainer.objective.step_loss = spy
    metrics = trainer.step()
    assert all(len(ids) == 2 and len(set(ids)) == 1 for ids in seen)
    assert metrics["grad_norm"] > 0
    # first EMA update at d(0) = 0: the old weights are the trained ones
    assert all(torch.equal(o, p) for o, p in zip(trainer.old.shadow_params, trainer.params))


def test_ode_rollouts_keep_the_final_latent_of_the_euler_ode() -> None:
    pipe = micro_pipeline()
    from star.sampling.sampler import condition, latent_shape, sigma_schedule

    cond = condition(pipe, ["a red star", "two circles"], 4.5, torch.device("cpu"))
    noise = torch.randn((2, *latent_shape(pipe)), generator=torch.Generator().manual_seed(0))
    sigmas = sigma_schedule(pipe, 3, torch.device("cpu"))
    args = (pipe.transformer, pipe.vae, cond, noise, sigmas, 0.7, 4.5, torch.Generator().manual_seed(1))
    ode = sample_rollouts(*args, deterministic=True)
    all_ode_steps = sample_rollouts(*args, sde_steps=[])
    assert ode["latents"].shape[1] == 1 and ode["log_probs"] is None
    assert torch.equal(ode["latents"][:, -1], all_ode_steps["latents"][:, -1])
    capture = AttentionCapture(pipe.transformer, None)
    mask = torch.zeros(2, cond.embeds.shape[1], dtype=torch.bool)
    mask[:, 1] = True
    captured = sample_rollouts(*args, capture=capture, core_mask=mask, deterministic=True)
    patches = (noise.shape[-1] // pipe.transformer.config.patch_size) ** 2
    assert captured["attention"].shape == (2, 3, patches)  # the maps of every ODE step
    assert torch.equal(captured["latents"], ode["latents"])  # capture leaves the sample alone


@pytest.mark.slow
@pytest.mark.parametrize("train", [{"algorithm": "nft", "allocation": "star"}, DGPO_SMALL | {"allocation": "temporal"}],
                         ids=["nft-star", "dgpo-temporal"])
def test_forward_objectives_resume_bit_for_bit(tmp_path: Path, train: dict) -> None:
    straight, _, resumed = straight_and_resumed(lambda work: _trainer(work, **train), tmp_path)
    assert resumed.optimizer_steps == straight.optimizer_steps
    a, b = trainable_state(straight.transformer), trainable_state(resumed.transformer)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(straight.old.shadow_params, resumed.old.shadow_params))
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
