"""The miniature SD3: built from configs, saved, and loaded back through the real loading path."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from star.config import MiniModelConfig
from star.models.sd3 import (
    ModelLoadError,
    build_mini_sd3,
    build_world_tokenizer,
    configure_decoding,
    encode_prompts,
    images_from_latents,
    latents_from_images,
    load_pipeline,
)
from star.sampling.sampler import sample_ode
from star.world.prompts import sample_training_scene, vocabulary
from star.world.render import Layout
from star.world.vocab import TEXT_CHARSET

WORDS = ["a", "photo", "of", "red", "blue", "circle", "square", "left", "and", "sign", "says"]
CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TINY = MiniModelConfig(
    vae_channels=[8, 8], latent_channels=4, layers=2, heads=2, head_dim=8, patch_size=2, text_width=16,
    text_layers=1, text_heads=2, t5_width=32, clip_tokens=12, t5_tokens=12, vae_mid_attention=True,
)


@pytest.fixture(scope="module")
def tiny_pipe():
    return build_mini_sd3(TINY, WORDS, CHARSET, image_size=32, seed=0)


def test_tokenizer_words_characters_and_specials(tmp_path: Path) -> None:
    clip = build_world_tokenizer(WORDS, CHARSET, 12, kind="clip")
    t5 = build_world_tokenizer(WORDS, CHARSET, 12, kind="t5")
    assert clip.tokenize('a sign says "K7Q"') == ["a", "sign", "says", '"', "K", "##7", "##Q", '"']
    chars = build_world_tokenizer(WORDS, CHARSET, 12, kind="clip", char_tokens=True)
    assert chars.tokenize('a sign says "K7Q"') == ["a", "sign", "says", '"', "K", "7", "Q", '"']
    assert chars('"KK"').input_ids[2] == chars('"K"').input_ids[2] == chars('"7K"').input_ids[3], "one id per glyph"
    chars.save_pretrained(tmp_path)  # as the base model saves it
    assert type(chars).from_pretrained(tmp_path).tokenize('"K7Q"') == ['"', "K", "7", "Q", '"']
    ids = clip("a red circle").input_ids
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id and len(ids) == 5
    ids5 = t5("a red circle").input_ids
    assert ids5[-1] == t5.eos_token_id and len(ids5) == 4
    assert clip.tokenize("zebra") == ["<unk>"]
    padded = clip("a", padding="max_length", max_length=12).input_ids
    assert len(padded) == 12 and padded[-1] == clip.pad_token_id


def test_same_classes_as_sd3(tiny_pipe) -> None:
    assert isinstance(tiny_pipe.transformer, SD3Transformer2DModel)
    assert isinstance(tiny_pipe.vae, AutoencoderKL)
    assert isinstance(tiny_pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    embeds, pooled = encode_prompts(tiny_pipe, ["a red circle", ""])
    # CLIP tokens then T5 tokens, at the T5 width; pooled = both CLIP projections
    assert embeds.shape == (2, TINY.clip_tokens + TINY.t5_tokens, TINY.t5_width)
    assert pooled.shape == (2, 2 * TINY.text_width)


def test_save_load_round_trip_is_exact(tiny_pipe, tmp_path: Path) -> None:
    tiny_pipe.save_pretrained(tmp_path / "mini")
    loaded = load_pipeline(tmp_path / "mini")
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        a, b = getattr(tiny_pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    prompts = ['a blue square', 'a sign says "AB"']
    assert torch.equal(encode_prompts(tiny_pipe, prompts)[0], encode_prompts(loaded, prompts)[0])
    kwargs = dict(seeds=[1, 2], steps=3, guidance_scale=2.0)
    assert torch.equal(sample_ode(tiny_pipe, prompts, **kwargs), sample_ode(loaded, prompts, **kwargs))


def test_sampling_shapes_and_seed_per_image(tiny_pipe) -> None:
    images = sample_ode(tiny_pipe, ["a red circle"] * 3, seeds=[5, 6, 5], steps=2, guidance_scale=3.0, batch_size=2)
    assert images.shape == (3, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    # image 2 shares image 0's seed but lands in another batch: same image up to float rounding
    assert torch.allclose(images[0], images[2], atol=1e-5)
    assert (images[0] - images[1]).abs().max() > 0.01


def test_vae_latent_normalisation_inverts(tiny_pipe) -> None:
    tiny_pipe.vae.register_to_config(shift_factor=0.3, scaling_factor=2.0)
    images = torch.rand(2, 3, 32, 32)
    latents = latents_from_images(tiny_pipe.vae, images)
    raw = tiny_pipe.vae.encode(images * 2 - 1).latent_dist.mean
    assert torch.allclose(latents, (raw - 0.3) * 2.0)
    decoded = images_from_latents(tiny_pipe.vae, latents)
    expected = (tiny_pipe.vae.decode(raw).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(decoded, expected, atol=1e-6)
    tiny_pipe.vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)


def test_decoding_precision_knob_stays_close_to_float32(tiny_pipe) -> None:
    """``model.decode_dtype``: channels-last fp32 decodes the same images; bf16 autocast within
    the 0.01-0.02 pixel tolerance method §7 states (the tiny VAE is untrained, so less smooth)."""
    vae = copy.deepcopy(tiny_pipe.vae)
    latents = torch.randn(4, vae.config.latent_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    reference = images_from_latents(vae, latents)
    configure_decoding(vae, "float32")
    assert vae.decode_autocast is None
    assert torch.allclose(images_from_latents(vae, latents), reference, atol=1e-5)
    configure_decoding(vae, "bfloat16")
    assert vae.decode_autocast is torch.bfloat16
    fast = images_from_latents(vae, latents)
    assert fast.dtype == torch.float32 and fast.shape == reference.shape
    difference = (fast - reference).abs()
    assert 0 < difference.max() < 0.05 and difference.mean() < 0.01


def test_unavailable_hub_model_names_model_and_offline_flag(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as info:
        load_pipeline("stabilityai/stable-diffusion-3.5-medium")
    message = str(info.value)
    assert "stabilityai/stable-diffusion-3.5-medium" in message and "HF_HUB_OFFLINE=1" in message
    with pytest.raises(ModelLoadError, match=r"no_such_dir does not exist \(a local path, not a hub id\)") as info:
        load_pipeline(tmp_path / "no_such_dir")
    assert "hf download" not in str(info.value), "a missing local path is not a model to download"


def test_latent_grid_must_fit_patches() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        build_mini_sd3(TINY.model_copy(update={"patch_size": 3}), WORDS, CHARSET, image_size=32, seed=0)


def test_vae_mid_attention_knob_builds_and_round_trips(tmp_path: Path) -> None:
    config = TINY.model_copy(update={"vae_mid_attention": False})  # the default
    pipe = build_mini_sd3(config, WORDS, CHARSET, image_size=32, seed=0)
    assert pipe.vae.encoder.mid_block.attentions[0] is None
    assert pipe.vae.decoder.mid_block.attentions[0] is None
    assert build_mini_sd3(TINY, WORDS, CHARSET, 32, seed=0).vae.encoder.mid_block.attentions[0] is not None
    pipe.save_pretrained(tmp_path / "local")
    loaded = load_pipeline(tmp_path / "local")
    assert loaded.vae.encoder.mid_block.attentions[0] is None
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(latents_from_images(pipe.vae, images), latents_from_images(loaded.vae, images))


def test_default_text_segments_hold_every_world_prompt() -> None:
    """The default 16-token segments are sized to the longest world prompt: none is truncated."""
    defaults = MiniModelConfig()
    rng = np.random.default_rng(0)
    prompts = [sample_training_scene(rng, 40, Layout(10))[1] for _ in range(3000)]
    for kind, length in (("clip", defaults.clip_tokens), ("t5", defaults.t5_tokens)):
        tokenizer = build_world_tokenizer(vocabulary(), TEXT_CHARSET, length, kind=kind)
        longest = max(len(tokenizer(p, truncation=False)["input_ids"]) for p in prompts)
        assert longest <= length, (kind, longest)


@pytest.mark.parametrize(
    "overrides, grid",
    [
        ({}, 8),  # the embedded default: 80 px, objects on every other 10 px token of the 8x8 grid
        # the earlier 4x4 world, by params
        ({"world": {"image_size": 40, "layout_stride": 1, "text_layout": "free"},
          "model": {"mini": {"vae_channels": [32, 64]}},
          "base": {"low_res_size": 0, "low_res_steps": 0, "low_res_interleave": 0}}, 4),
    ],
    ids=["8x8", "4x4"],
)
def test_world_geometry_one_object_per_token(overrides: dict, grid: int) -> None:
    """Each layout cell is one transformer token (VAE downsampling x patch = layout_cell), so a
    4-object GenEval scene covers 4 whole tokens: a sixteenth of the default's 64, a quarter of
    the 4x4 world's 16 (the reason for the 8x8 default)."""
    from star.config import config_from_dict
    from star.method.regions import token_coverage
    from star.world.prompts import counting_record, scene_for_metadata
    from star.world.render import world_layout

    cfg = config_from_dict(overrides)
    pipe = build_mini_sd3(cfg.model.mini, vocabulary(), TEXT_CHARSET, cfg.world.image_size, seed=0)
    transformer = pipe.transformer.config
    assert transformer.sample_size // transformer.patch_size == grid
    assert cfg.world.image_size // grid == cfg.world.layout_cell
    scene = scene_for_metadata(counting_record("star", 4), np.random.default_rng(0), cfg.world.image_size,
                               world_layout(cfg.world))
    coverage = token_coverage([[o.box for o in scene.objects]], cfg.world.image_size, grid)[0]
    assert sorted(coverage.unique().tolist()) == [0.0, 1.0] and coverage.sum() == 4
    rows, cols = (coverage.view(grid, grid) > 0).nonzero(as_tuple=True)
    stride = cfg.world.layout_stride
    assert (rows % stride == 0).all() and (cols % stride == 0).all()  # only every stride-th cell holds objects
