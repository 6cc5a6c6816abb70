"""Pretraining is resumable bit for bit, and learns on a trivially small problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from star.config import BaseConfig
from star.models.sd3 import build_mini_sd3
from star.rl import checkpoint
from star.world.config import WorldConfig
from star.world.pretrain import (
    LatentSet,
    WorldDataset,
    flow_matching_loss,
    foreground_weights,
    lr_factor,
    phase_mixtures,
    train_transformer,
    train_vae,
    trains_low_res,
    vae_loss,
)
from tests.test_models import CHARSET, TINY, WORDS


def tiny_data(n: int = 16) -> WorldDataset:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8))
    return WorldDataset(images, [["a red circle", "a blue square"][i % 2] for i in range(n)], ["colors"] * n)


def run_transformer(
    cfg: BaseConfig, ckpt: Path, latents: torch.Tensor, data: WorldDataset, low_res: LatentSet | None = None
) -> dict:
    pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
    generator = checkpoint.seed_everything(0)
    state = checkpoint.load(ckpt)
    if state is not None:  # the generator is restored from the checkpoint as a real resume would
        generator = torch.Generator()
    train_transformer(pipe, LatentSet(latents, data.captions), cfg, generator, ckpt, low_res=low_res)
    return pipe.transformer.state_dict()


def test_transformer_resume_is_bit_identical(tmp_path: Path) -> None:
    data = tiny_data()
    latents = torch.randn(len(data.captions), 4, 16, 16, generator=torch.Generator().manual_seed(1))
    straight = run_transformer(BaseConfig(steps=4, batch_size=4, checkpoint_every=2), tmp_path / "a.ckpt",
                               latents, data)
    # two steps, "crash", then the same command again with the full budget
    run_transformer(BaseConfig(steps=2, batch_size=4, checkpoint_every=2), tmp_path / "b.ckpt", latents, data)
    resumed = run_transformer(BaseConfig(steps=4, batch_size=4, checkpoint_every=2), tmp_path / "b.ckpt", latents, data)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.slow
def test_low_resolution_steps_come_first_and_resume_across_the_switch(tmp_path: Path) -> None:
    """SD3's transformer takes fewer tokens (its position embedding is cropped): the first
    low_res_steps see the 4x4-token set, then the 8x8 one; a resume at the switch is exact."""
    data = tiny_data()
    latents = torch.randn(len(data.captions), 4, 16, 16, generator=torch.Generator().manual_seed(1))
    small = LatentSet(torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(2)), ["a red circle"] * 8)
    cfg = dict(batch_size=4, checkpoint_every=2, low_res_steps=2)
    straight = run_transformer(BaseConfig(steps=4, **cfg), tmp_path / "a.ckpt", latents, data, small)
    run_transformer(BaseConfig(steps=2, **cfg), tmp_path / "b.ckpt", latents, data, small)
    resumed = run_transformer(BaseConfig(steps=4, **cfg), tmp_path / "b.ckpt", latents, data, small)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    without = run_transformer(BaseConfig(steps=4, **cfg), tmp_path / "c.ckpt", latents, data)
    assert any(not torch.equal(straight[k], without[k]) for k in straight), "the low-resolution set was used"


def test_interleaved_low_resolution_steps_fall_every_nth_full_size_step() -> None:
    """``low_res_interleave`` n: after the low-resolution phase, every n-th step is low-resolution."""
    cfg = BaseConfig(steps=12, low_res_steps=3, low_res_interleave=3)
    assert [s for s in range(cfg.steps) if trains_low_res(s, cfg)] == [0, 1, 2, 5, 8, 11]
    plain = BaseConfig(steps=12, low_res_steps=3, low_res_interleave=0)
    assert [s for s in range(plain.steps) if trains_low_res(s, plain)] == [0, 1, 2]


@pytest.mark.slow
def test_interleaved_training_uses_the_low_resolution_set_and_resumes_exactly(tmp_path: Path) -> None:
    data = tiny_data()
    latents = torch.randn(len(data.captions), 4, 16, 16, generator=torch.Generator().manual_seed(1))
    small = LatentSet(torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(2)), ["a red circle"] * 8)
    cfg = dict(batch_size=4, checkpoint_every=3, low_res_steps=1, low_res_interleave=2)
    straight = run_transformer(BaseConfig(steps=5, **cfg), tmp_path / "a.ckpt", latents, data, small)
    run_transformer(BaseConfig(steps=3, **cfg), tmp_path / "b.ckpt", latents, data, small)
    resumed = run_transformer(BaseConfig(steps=5, **cfg), tmp_path / "b.ckpt", latents, data, small)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    cfg["low_res_interleave"] = 0
    phased = run_transformer(BaseConfig(steps=5, **cfg), tmp_path / "c.ckpt", latents, data, small)
    assert any(not torch.equal(straight[k], phased[k]) for k in straight), "the interleaved steps changed the run"


def test_vae_resume_is_bit_identical(tmp_path: Path) -> None:
    data = tiny_data()

    def run(steps: int, ckpt: Path) -> dict:
        pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
        generator = checkpoint.seed_everything(0)
        train_vae(pipe.vae, data, BaseConfig(vae_steps=steps, vae_batch_size=2, checkpoint_every=2), generator, ckpt)
        return pipe.vae.state_dict()

    straight = run(4, tmp_path / "a.ckpt")
    run(2, tmp_path / "b.ckpt")
    resumed = run(4, tmp_path / "b.ckpt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_foreground_weights_mark_what_is_off_the_grey_background() -> None:
    images = torch.full((1, 3, 4, 4), 128 / 255)
    images[0, :, 1, 2] = torch.tensor([220, 30, 30]) / 255  # a red pixel
    images[0, 0, 3, 3] = 131 / 255  # off by 3/255 in one channel: background noise, not an object
    weights = foreground_weights(images, 4.0)
    expected = torch.ones(1, 1, 4, 4)
    expected[0, 0, 1, 2] = 5.0
    assert torch.equal(weights, expected)


def test_vae_foreground_weight_averages_the_error_with_those_weights() -> None:
    vae = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0).vae
    images = tiny_data(2).images.float() / 255
    images[:, :, :16] = 128 / 255  # the top half is background
    target = images * 2 - 1
    with torch.no_grad():
        torch.manual_seed(0)  # the posterior sample draws from the global generator
        recon = vae.decode(vae.encode(target).latent_dist.sample()).sample
        torch.manual_seed(0)
        plain, mse = vae_loss(vae, images, 0.0)
        torch.manual_seed(0)
        weighted, logged = vae_loss(vae, images, 0.0, foreground_weight=4.0)
    weights = foreground_weights(images, 4.0)
    assert plain.item() == pytest.approx(((recon - target) ** 2).mean().item(), rel=1e-5)  # weight 0: MSE
    expected = ((recon - target) ** 2 * weights).sum() / (weights.sum() * 3)
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logged == pytest.approx(mse, rel=1e-5)  # the logged MSE stays unweighted
    assert weighted.item() > plain.item() * 1.1  # the objects' error counts more than the background's


@pytest.mark.slow
def test_flow_matching_loss_decreases_when_fitting_one_batch() -> None:
    pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
    latents = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    from star.models.sd3 import encode_prompts

    embeds, pooled = encode_prompts(pipe, ["a red circle"] * 4)
    optimizer = torch.optim.AdamW(pipe.transformer.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = flow_matching_loss(pipe.transformer, latents, embeds, pooled, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_lr_schedule_warms_up_then_decays_to_a_tenth() -> None:
    assert lr_factor(0, 100, 10) == 0.1 and lr_factor(9, 100, 10) == 1.0
    assert lr_factor(10, 100, 10) == 1.0 and abs(lr_factor(100, 100, 10) - 0.1) < 1e-9


def test_training_sigmas_use_the_samplers_shift() -> None:
    from star.world.pretrain import shifted_sigmas

    u = torch.linspace(0, 1, 11)
    assert torch.allclose(shifted_sigmas(u, 1.0), u)
    shifted = shifted_sigmas(u, 3.0)
    assert shifted[5].item() == pytest.approx(0.75) and shifted[0] == 0 and shifted[-1] == 1
    assert (shifted[1:] > shifted[:-1]).all()
    # the map is FlowMatchEulerDiscreteScheduler's own: its schedule is the shifted linspace
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    linear = torch.linspace(1.0, scheduler.sigma_min, 10)
    assert torch.allclose(shifted_sigmas(linear, 3.0), scheduler.sigmas[:-1], atol=1e-5)


def test_each_resolution_phase_has_its_own_warm_up_and_decay() -> None:
    from star.world.pretrain import phase_lr_factor

    cfg = BaseConfig(steps=300, low_res_steps=200, warmup_steps=10)
    assert phase_lr_factor(199, cfg, two_phases=True) == pytest.approx(lr_factor(199, 200, 10))
    assert phase_lr_factor(200, cfg, two_phases=True) == pytest.approx(0.1)  # warm-up again
    assert phase_lr_factor(210, cfg, two_phases=True) == pytest.approx(1.0, abs=1e-3)
    assert phase_lr_factor(250, cfg, two_phases=False) == lr_factor(250, 300, 10)


def test_final_lr_fraction_is_where_each_phase_decays_to() -> None:
    from star.world.pretrain import phase_lr_factor

    cfg = BaseConfig(steps=300, low_res_steps=200, warmup_steps=10, final_lr_fraction=0.5)
    assert phase_lr_factor(199, cfg, two_phases=True) == pytest.approx(0.5, abs=1e-3)
    assert phase_lr_factor(299, cfg, two_phases=True) == pytest.approx(0.5, abs=1e-3)
    assert phase_lr_factor(150, cfg, two_phases=True) > lr_factor(150, 200, 10)  # held above the default's 0.1 floor
    with pytest.raises(ValueError, match="final_lr_fraction"):
        BaseConfig(final_lr_fraction=1.5)


def test_low_res_phase_leaves_out_signs_only_when_asked() -> None:
    """``base.low_res_signs`` false: the low-resolution transformer set keeps every family but
    "ocr", in its order; the VAE's set (the rendered one) is untouched."""
    from star.world.pretrain import low_res_latents, render_world_dataset
    from star.world.prompts import world_text

    world = WorldConfig()
    small = render_world_dataset(48, 40, seed=3, progress=False, text=world_text(world), mixture=BaseConfig().mixture)
    assert "ocr" in small.tags and len(set(small.tags)) > 2
    pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=40, seed=0)
    kept = low_res_latents(pipe, small, signs=False, grounded=True)
    assert kept.captions == [c for c, t in zip(small.captions, small.tags) if t != "ocr"]
    assert kept.latents.shape[0] == len(kept.captions) == kept.grounding.objects.shape[0]
    assert low_res_latents(pipe, small, signs=True, grounded=False).captions == small.captions


def test_text_encoders_train_only_when_asked_and_resume_exactly(tmp_path: Path) -> None:
    """``base.train_text_encoders``: CLIP and T5 weights move (and resume bit for bit);
    without it they stay at their initialisation."""
    data = tiny_data()
    latents = torch.randn(len(data.captions), 4, 16, 16, generator=torch.Generator().manual_seed(1))

    def encoders_after(steps: int, ckpt: Path, **knobs: object) -> dict[str, torch.Tensor]:
        pipe = build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)
        generator = torch.Generator() if checkpoint.load(ckpt) is not None else checkpoint.seed_everything(0)
        cfg = BaseConfig(steps=steps, batch_size=4, checkpoint_every=2, **knobs)
        train_transformer(pipe, LatentSet(latents, data.captions), cfg, generator, ckpt)
        assert not any(p.requires_grad for p in pipe.text_encoder_3.parameters()), "frozen after training"
        return {f"{name}.{k}": v.clone() for name in ("text_encoder", "text_encoder_2", "text_encoder_3")
                for k, v in getattr(pipe, name).state_dict().items()}

    init = encoders_after(0, tmp_path / "none.ckpt", train_text_encoders=False)
    frozen = encoders_after(4, tmp_path / "frozen.ckpt", train_text_encoders=False)
    assert all(torch.equal(init[k], frozen[k]) for k in init)
    trained = encoders_after(4, tmp_path / "a.ckpt", train_text_encoders=True)
    for name in ("text_encoder.", "text_encoder_2.", "text_encoder_3."):
        assert any(not torch.equal(init[k], trained[k]) for k in init if k.startswith(name)), name
    encoders_after(2, tmp_path / "b.ckpt", train_text_encoders=True)
    resumed = encoders_after(4, tmp_path / "b.ckpt", train_text_encoders=True)
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)


def test_the_full_size_phase_may_have_its_own_mixture() -> None:
    signs = {"ocr": 0.6, "counting": 0.4}
    base = BaseConfig()
    assert phase_mixtures(base) == (base.mixture, base.full_size_mixture) != (base.mixture, base.mixture)
    base = base.model_copy(update={"full_size_mixture": None})
    assert phase_mixtures(base) == (base.mixture, base.mixture)
    assert phase_mixtures(base.model_copy(update={"full_size_mixture": signs})) == (base.mixture, signs)
