"""Allocation maps (method §3.3, §5): every mode keeps the advantage mass of each image."""

from __future__ import annotations

import pytest
import torch

from star.method.allocation import (
    AllocationInputs,
    AllocationParams,
    allocate,
    allocation_maps,
    map_change,
    temporal_weights,
)
from star.rl.advantages import group_advantages, informative_groups

MODES = ["none", "uniform_region", "temporal", "spatial", "star", "oracle", "shuffled"]
SIGMAS = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.2, 0.0])


def _attention(b: int = 3, t: int = 5, p: int = 16) -> torch.Tensor:
    return torch.rand(b, t, p, generator=torch.Generator().manual_seed(0)) ** 3


def _inputs(attention: torch.Tensor, trained: list[int] | None = None, **kwargs: object) -> AllocationInputs:
    b, t, p = attention.shape
    coverage = torch.zeros(b, p)
    coverage[:, :3] = 1.0
    coverage[:, 3] = 0.5
    base = dict(coverage=coverage, generator=torch.Generator().manual_seed(1))
    return AllocationInputs(attention, SIGMAS[: t + 1], list(range(t)) if trained is None else trained,
                            **(base | kwargs))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("params", [AllocationParams(), AllocationParams(2.0, 0.5, 0.1, 8.0, "sigma"),
                                    AllocationParams(0.5, 1.0, 0.5, 1.5, "map_change")])
@pytest.mark.parametrize("trained", [None, [0, 1, 2, 3]])
def test_every_mode_preserves_the_mean_over_the_trained_steps(mode: str, params: AllocationParams,
                                                              trained: list[int] | None) -> None:
    attention = _attention()
    inputs = _inputs(attention, trained)
    weights = allocate(mode, inputs, params, tuple(attention.shape))
    assert weights.shape == attention.shape
    assert (weights >= 0).all()
    torch.testing.assert_close(weights[:, inputs.trained_steps].mean(dim=(1, 2)), torch.ones(3))


def test_star_maps_follow_attention_and_scale_by_the_temporal_weight() -> None:
    attention = _attention()
    inputs = _inputs(attention)
    star = allocate("star", inputs, AllocationParams(), tuple(attention.shape))
    maps = allocation_maps(attention, AllocationParams())
    tau = temporal_weights(maps, inputs, AllocationParams())
    torch.testing.assert_close(star, tau[..., None] * maps)
    torch.testing.assert_close(star.mean(dim=-1), tau)
    # more attention, more weight (monotone within each map, clamp aside)
    hi, lo = attention[0, 0].argmax(), attention[0, 0].argmin()
    assert star[0, 0, hi] > star[0, 0, lo]


def test_spatial_is_constant_over_steps_and_temporal_over_space() -> None:
    attention = _attention()
    shape = tuple(attention.shape)
    spatial = allocate("spatial", _inputs(attention), AllocationParams(), shape)
    assert torch.allclose(spatial, spatial[:, :1].expand_as(spatial))
    temporal = allocate("temporal", _inputs(attention), AllocationParams(), shape)
    assert torch.allclose(temporal, temporal[..., :1].expand_as(temporal))
    assert not torch.allclose(temporal[:, 0], temporal[:, -1]), "temporal weights vary over steps"


def test_temporal_rules_follow_their_definitions() -> None:
    """map_change: weight where the map moves; sigma: the noise level s_t."""
    maps = torch.ones(1, 4, 4)
    maps[0, 1] = torch.tensor([2.0, 0.0, 1.0, 1.0])  # step 0 -> 1 changes the map most ...
    maps[0, 2] = torch.tensor([2.0, 0.0, 1.0, 1.0])  # ... step 1 -> 2 not at all
    maps[0, 3] = torch.tensor([1.5, 0.5, 1.0, 1.0])
    change = map_change(maps)
    torch.testing.assert_close(change, torch.tensor([[0.5, 0.0, 0.25, 0.25]]))
    wide = AllocationParams(w_min=0.0, w_max=100.0)
    inputs = AllocationInputs(maps, SIGMAS[:5], [0, 1, 2, 3])
    tau = temporal_weights(maps, inputs, AllocationParams(w_min=0.0, w_max=100.0, temporal_rule="map_change"))
    torch.testing.assert_close(tau, change / change.mean())
    tau = temporal_weights(maps, inputs, AllocationParams(w_min=0.0, w_max=100.0, temporal_rule="sigma"))
    torch.testing.assert_close(tau[0], SIGMAS[:4] / SIGMAS[:4].mean())
    assert wide.temporal_rule == "map_change"


def test_temporal_weights_are_normalised_over_the_trained_steps_only() -> None:
    attention = _attention(t=4)
    inputs = _inputs(attention, trained=[0, 1, 2])
    tau = temporal_weights(allocation_maps(attention, AllocationParams()), inputs,
                           AllocationParams(temporal_rule="sigma"))
    torch.testing.assert_close(tau[:, :3].mean(dim=1), torch.ones(3))
    assert (tau[:, 0] > tau[:, 2]).all(), "earlier, noisier steps weigh more under the sigma rule"


def test_oracle_puts_weight_on_the_detected_objects_at_every_step() -> None:
    attention = _attention()
    inputs = _inputs(attention)
    oracle = allocate("oracle", inputs, AllocationParams(), tuple(attention.shape))
    assert torch.allclose(oracle, oracle[:, :1].expand_as(oracle))
    torch.testing.assert_close(oracle[:, 0], allocation_maps(inputs.coverage, AllocationParams()))
    assert (oracle[:, :, :3] > 3.0).all() and (oracle[:, :, 4:] < 0.5).all()
    empty = _inputs(attention, coverage=torch.zeros(3, 16))
    torch.testing.assert_close(allocate("oracle", empty, AllocationParams(), tuple(attention.shape)),
                               torch.ones(3, 5, 16))


def test_shuffled_keeps_stars_weights_but_not_their_places() -> None:
    attention = _attention()
    shape = tuple(attention.shape)
    star = allocate("star", _inputs(attention), AllocationParams(), shape)
    shuffled = allocate("shuffled", _inputs(attention), AllocationParams(), shape)
    torch.testing.assert_close(shuffled.sort(dim=-1).values, star.sort(dim=-1).values)
    moved = (shuffled != star).float().mean()
    assert moved > 0.5, f"only {moved:.2f} of the weights moved"  # clamped ties stay equal
    again = allocate("shuffled", _inputs(attention), AllocationParams(), shape)
    torch.testing.assert_close(again, shuffled)  # same generator seed, same permutation


def test_gamma_sharpens_mix_and_clamp_bound() -> None:
    attention = _attention()
    soft = allocation_maps(attention, AllocationParams(gamma=1.0, w_min=0.0, w_max=100.0))
    sharp = allocation_maps(attention, AllocationParams(gamma=2.0, w_min=0.0, w_max=100.0))
    assert ((sharp**2).mean(-1) > (soft**2).mean(-1)).all()  # mean_p w² = 1 + Var_p w: more peaked
    uniform = allocation_maps(attention, AllocationParams(mix=0.0))
    torch.testing.assert_close(uniform, torch.ones_like(uniform))
    tight = allocation_maps(attention, AllocationParams(w_min=0.8, w_max=1.25))
    assert tight.max() < 1.25 * 1.25 and tight.min() > 0.8 / 1.25


def test_no_core_attention_gives_the_uniform_map() -> None:
    maps = allocate("star", AllocationInputs(torch.zeros(2, 3, 4), SIGMAS[:4], [0, 1, 2]), AllocationParams(),
                    (2, 3, 4))
    torch.testing.assert_close(maps, torch.ones(2, 3, 4))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="needs captured attention"):
        allocate("star", AllocationInputs(None, SIGMAS[:3], [0, 1]), AllocationParams(), (1, 2, 4))
    with pytest.raises(ValueError, match="shape"):
        allocate("star", AllocationInputs(torch.ones(1, 2, 3), SIGMAS[:3], [0, 1]), AllocationParams(), (1, 2, 4))
    with pytest.raises(ValueError, match="coverage"):
        allocate("oracle", AllocationInputs(torch.ones(1, 2, 4), SIGMAS[:3], [0, 1]), AllocationParams(), (1, 2, 4))
    with pytest.raises(ValueError, match="non-negative"):
        allocation_maps(-torch.ones(1, 2, 3), AllocationParams())


def test_group_advantages() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 4.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    adv = group_advantages(rewards, groups)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0, 0.0, -1.0, 1.0]), atol=1e-3, rtol=0)
    assert informative_groups(adv, groups).tolist() == [True, True, False, False, True, True]
    global_adv = group_advantages(rewards, groups, global_std=True)
    std = rewards.std(unbiased=False)
    torch.testing.assert_close(global_adv[4:], torch.tensor([-1.0, 1.0]) / (std + 1e-4))
    clipped = group_advantages(torch.tensor([0.0] * 9 + [1.0]), torch.zeros(10, dtype=torch.long), clip=2.0)
    assert clipped.max() == 2.0
