"""Attention capture (method §3.2): the block output is unchanged and the map is what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import JointAttnProcessor2_0

from star.config import load_config
from star.method.attention import AttentionCapture, default_capture_blocks
from star.method.core_content import core_token_mask, text_segments
from star.rl.trainer import Trainer
from star.sampling.sampler import condition, latent_shape
from tests.conftest import GENEVAL_RECORDS, MICRO, BrightnessReward, micro_pipeline


def _inputs(pipe):
    prompts = [r["prompt"] for r in GENEVAL_RECORDS]
    cond = condition(pipe, prompts, 1.0, torch.device("cpu"))
    latents = torch.randn(2, *latent_shape(pipe), generator=torch.Generator().manual_seed(0))
    mask = core_token_mask(text_segments(pipe), prompts, GENEVAL_RECORDS)
    return cond, latents, mask


def _forward(pipe, cond, latents) -> torch.Tensor:
    return pipe.transformer(hidden_states=latents, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                            timestep=torch.full((2,), 700.0), return_dict=False)[0]


@torch.no_grad()
def test_capture_leaves_every_block_output_unchanged() -> None:
    pipe = micro_pipeline()
    pipe.transformer.set_attn_processor(JointAttnProcessor2_0())
    cond, latents, mask = _inputs(pipe)
    stock = _forward(pipe, cond, latents)
    capture = AttentionCapture(pipe.transformer, blocks=list(range(len(pipe.transformer.transformer_blocks))))
    with capture.recording(mask):
        captured = _forward(pipe, cond, latents)
    idle = _forward(pipe, cond, latents)
    assert (captured - stock).abs().max() <= 1e-6
    assert (idle - stock).abs().max() <= 1e-6
    capture.remove()
    assert all(isinstance(b.attn.processor, JointAttnProcessor2_0) for b in pipe.transformer.transformer_blocks)


@torch.no_grad()
def test_capture_map_is_the_core_attention_mass() -> None:
    pipe = micro_pipeline()
    cond, latents, mask = _inputs(pipe)
    capture = AttentionCapture(pipe.transformer)
    tokens = (latent_shape(pipe)[1] // pipe.transformer.config.patch_size) ** 2
    with capture.recording(torch.ones_like(mask)):
        _forward(pipe, cond, latents)
    torch.testing.assert_close(capture.result(), torch.ones(2, tokens))  # softmax over text sums to 1
    with capture.recording(mask):
        _forward(pipe, cond, latents)
    core = capture.result()
    assert core.shape == (2, tokens) and (core > 0).all() and (core < 1).all()
    with capture.recording(1 - mask):
        _forward(pipe, cond, latents)
    torch.testing.assert_close(core + capture.result(), torch.ones(2, tokens))
    with pytest.raises(ValueError, match="core mask has shape"), capture.recording(mask[:1]):
        _forward(pipe, cond, latents)


def test_default_blocks_are_the_middle_half() -> None:
    assert default_capture_blocks(4) == [1, 2]
    assert default_capture_blocks(24) == list(range(6, 18))
    assert default_capture_blocks(2) == [0, 1]
    assert default_capture_blocks(1) == [0]


def test_nothing_is_captured_when_star_is_off(tmp_path: Path) -> None:
    for mode, captures in (("none", False), ("uniform_region", False), ("star", True), ("temporal", True)):
        cfg = load_config(MICRO, overrides={"train": {"allocation": mode, "group_size": 2, "steps": 2}})
        trainer = Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path / mode, progress=False)
        rollouts = trainer.sample(GENEVAL_RECORDS)
        processors = {type(b.attn.processor).__name__ for b in trainer.transformer.transformer_blocks}
        assert (rollouts.attention is not None) == captures
        assert ("CaptureJointAttnProcessor" in processors) == captures
        if captures:
            assert rollouts.attention.shape == (4, 2, 16)
