"""Allocation maps (method §3.3, §5): every mode keeps the advantage mass of each image."""

from __future__ import annotations

import pytest
import torch

from star.advantages import group_advantages, informative_groups
from star.allocation import AllocationParams, allocate, allocation_maps, concentration

MODES = ["none", "uniform_region", "temporal", "spatial", "star"]


def _attention(b: int = 3, t: int = 5, p: int = 16) -> torch.Tensor:
    return torch.rand(b, t, p, generator=torch.Generator().manual_seed(0)) ** 3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("params", [AllocationParams(), AllocationParams(2.0, 0.5, 0.1, 8.0), AllocationParams(0.5, 1.0, 0.5, 1.5)])
def test_every_mode_preserves_the_mean(mode: str, params: AllocationParams) -> None:
    attention = _attention()
    weights = allocate(mode, attention, params, tuple(attention.shape))
    assert weights.shape == attention.shape
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.mean(dim=(1, 2)), torch.ones(3))


def test_star_maps_have_mean_one_per_step_and_follow_attention() -> None:
    attention = _attention()
    maps = allocate("star", attention, AllocationParams(), tuple(attention.shape))
    torch.testing.assert_close(maps.mean(dim=-1), torch.ones(3, 5))
    # more attention, more weight (monotone within each map, clamp aside)
    hi, lo = attention[0, 0].argmax(), attention[0, 0].argmin()
    assert maps[0, 0, hi] > maps[0, 0, lo]


def test_spatial_is_constant_over_steps_and_temporal_over_space() -> None:
    attention = _attention()
    shape = tuple(attention.shape)
    spatial = allocate("spatial", attention, AllocationParams(), shape)
    assert torch.allclose(spatial, spatial[:, :1].expand_as(spatial))
    temporal = allocate("temporal", attention, AllocationParams(), shape)
    assert torch.allclose(temporal, temporal[..., :1].expand_as(temporal))
    assert not torch.allclose(temporal[:, 0], temporal[:, -1]), "temporal weights vary over steps"


def test_gamma_sharpens_mix_and_clamp_bound() -> None:
    attention = _attention()
    soft = allocation_maps(attention, AllocationParams(gamma=1.0, w_min=0.0, w_max=100.0))
    sharp = allocation_maps(attention, AllocationParams(gamma=2.0, w_min=0.0, w_max=100.0))
    assert (concentration(sharp) > concentration(soft)).all()
    uniform = allocation_maps(attention, AllocationParams(mix=0.0))
    torch.testing.assert_close(uniform, torch.ones_like(uniform))
    tight = allocation_maps(attention, AllocationParams(w_min=0.8, w_max=1.25))
    assert tight.max() < 1.25 * 1.25 and tight.min() > 0.8 / 1.25


def test_no_core_attention_gives_the_uniform_map() -> None:
    maps = allocate("star", torch.zeros(2, 3, 4), AllocationParams(), (2, 3, 4))
    torch.testing.assert_close(maps, torch.ones(2, 3, 4))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="needs captured attention"):
        allocate("star", None, AllocationParams(), (1, 2, 4))
    with pytest.raises(ValueError, match="shape"):
        allocate("star", torch.ones(1, 2, 3), AllocationParams(), (1, 2, 4))
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
