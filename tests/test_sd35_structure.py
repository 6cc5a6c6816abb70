"""STAR on Stable Diffusion 3.5 Medium's own structure, on CPU.

``tests/tiny_models.save_sd35_structured_pipeline`` builds SD3.5-M's transformer through
diffusers with its published structural settings (MMDiT-X: dual attention in the first blocks,
``qk_norm`` rms_norm, patch 2, ``pos_embed_max_size`` 384, joint attention dim 4096, pooled
projection 2048, caption projection = width) at reduced depth and width, two CLIP text encoders
with projections (768 + 1280) and a T5 encoder at SD3's 77 + 256 tokens, saves it with
``StableDiffusion3Pipeline.save_pretrained`` and the tests load it through ``model.source:
pretrained`` — the loading path of the real model.

Tokenizers: the real classes (``CLIPTokenizer`` with byte-level BPE and ``</w>`` word ends,
``T5TokenizerFast`` over a SentencePiece unigram model), with vocabularies learnt locally from a
few prompts. CLIP's BPE vocabulary ships only in packages that depend on torchvision
(open_clip_torch 3.3.0, clip-anytorch 2.6.0: ``bpe_simple_vocab_16e6.txt.gz``), which must not be
installed here, and no package ships T5's ``spiece.model``; the locally learnt vocabularies keep
what matters to core-token positions: multi-character BPE pieces with word-end markers, and
SentencePiece's ``▁`` word-start pieces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from star.config import load_config
from star.method.attention import AttentionCapture
from star.method.core_content import core_token_mask, text_segments
from star.models.lora import add_lora
from star.models.sd3 import encode_prompts, pipeline_for, text_sequence_length
from star.rl.trainer import Trainer
from star.sampling.sampler import sample_ode
from tests.conftest import MICRO, BrightnessReward
from tests.tiny_models import SD35_MEDIUM_TRANSFORMER, save_sd35_structured_pipeline

RECORD = {
    "tag": "color_attr", "prompt": "a photo of a purple wine glass and a black apple",
    "include": [{"class": "wine glass", "count": 1, "color": "purple"},
                {"class": "apple", "count": 1, "color": "black"}],
}
SECOND = {"tag": "counting", "prompt": "a photo of two clocks",
          "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_sd35_structured_pipeline(tmp_path_factory.mktemp("sd35"))


def config(saved: Path, **train: object):
    return load_config(MICRO, overrides={"model": {"source": "pretrained", "pretrained": str(saved)},
                                         "train": {"iterations": 1, "prompts_per_iteration": 2, "group_size": 2,
                                                   "steps": 3, "minibatch_size": 2, **train}})


@pytest.fixture
def pipe(saved: Path):
    cfg = config(saved)
    return pipeline_for(cfg.model, Path("unused: model.source is pretrained"))


def test_loads_with_sd35_mediums_structure(pipe) -> None:
    t = pipe.transformer.config
    for key in ("patch_size", "in_channels", "joint_attention_dim", "pooled_projection_dim", "pos_embed_max_size",
                "qk_norm"):
        assert t[key] == SD35_MEDIUM_TRANSFORMER[key], key
    assert (tuple(t.dual_attention_layers) == (0, 1)
            and t.caption_projection_dim == t.num_attention_heads * t.attention_head_dim)
    blocks = pipe.transformer.transformer_blocks
    assert [b.attn2 is not None for b in blocks] == [True, True, False, False]
    assert blocks[0].attn.norm_q is not None and blocks[-1].context_pre_only
    assert (pipe.tokenizer_max_length, text_sequence_length(pipe), pipe.vae_scale_factor) == (77, 256, 8)
    embeds, pooled = encode_prompts(pipe, [RECORD["prompt"], SECOND["prompt"]])
    assert embeds.shape == (2, 77 + 256, 4096) and pooled.shape == (2, 768 + 1280)


def _block_outputs(transformer, inputs: dict) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(
                 lambda _m, _i, out: outputs.append(torch.cat([o.flatten() for o in out if o is not None])))
             for b in transformer.transformer_blocks]
    try:
        with torch.no_grad():
            outputs.append(transformer(**inputs, return_dict=False)[0].flatten())
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def test_capture_leaves_every_block_output_unchanged(pipe) -> None:
    """Capture in every block, the dual-attention ones included: each block's output equals the
    stock processors' within 1e-6, and the maps cover the 4x4 token grid."""
    torch.manual_seed(0)
    embeds, pooled = encode_prompts(pipe, [RECORD["prompt"], SECOND["prompt"]])
    inputs = {"hidden_states": torch.randn(2, 16, 8, 8), "encoder_hidden_states": embeds,
              "pooled_projections": pooled, "timestep": torch.tensor([700.0, 300.0])}
    stock = _block_outputs(pipe.transformer, inputs)
    blocks = list(range(len(pipe.transformer.transformer_blocks)))
    capture = AttentionCapture(pipe.transformer, blocks)
    mask = core_token_mask(text_segments(pipe), [RECORD["prompt"], SECOND["prompt"]], [RECORD, SECOND])
    with capture.recording(mask):
        captured = _block_outputs(pipe.transformer, inputs)
    maps = capture.result()
    capture.remove()
    assert len(captured) == len(stock) == len(blocks) + 1
    for index, (a, b) in enumerate(zip(stock, captured)):
        assert (a - b).abs().max() <= 1e-6, f"block {index}"
    assert maps.shape == (2, 16) and torch.isfinite(maps).all() and ((maps > 0) & (maps < 1)).all()
    assert all(type(b.attn.processor).__name__ != "CaptureJointAttnProcessor"
               for b in pipe.transformer.transformer_blocks)


def _marked_tokens(tokenizer, prompt: str, row: torch.Tensor, length: int) -> list[str]:
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True)["input_ids"]
    return [tokenizer.convert_ids_to_tokens(ids[i]) for i in row.nonzero().flatten().tolist()]


def test_core_tokens_on_clip_bpe_and_t5_sentencepiece(pipe) -> None:
    row = core_token_mask(text_segments(pipe), [RECORD["prompt"]], [RECORD])[0]
    assert row.shape == (77 + 256,)
    clip = _marked_tokens(pipe.tokenizer, RECORD["prompt"], row[:77], 77)
    assert clip == ["purple</w>", "wine</w>", "glass</w>", "black</w>", "apple</w>"]
    t5 = "".join(_marked_tokens(pipe.tokenizer_3, RECORD["prompt"], row[77:], 256)).replace("▁", " ").split()
    assert t5 == ["purple", "wine", "glass", "black", "apple"]
    # a word the BPE never saw whole is split into pieces, and every piece is marked
    unseen = {"tag": "colors", "prompt": "a photo of a brown zebra",
              "include": [{"class": "zebra", "count": 1, "color": "brown"}]}
    pieces = _marked_tokens(pipe.tokenizer, unseen["prompt"],
                            core_token_mask(text_segments(pipe), [unseen["prompt"]], [unseen])[0][:77], 77)
    assert len(pieces) > 2 and "".join(pieces).replace("</w>", "") == "brownzebra"


def test_lora_targets_adapt_the_joint_attention_only(pipe, saved: Path) -> None:
    """Flow-GRPO's targets (``attn.to_q`` …) adapt the joint attention of every block; the
    dual-attention blocks' second, image-only attention (``attn2``) stays frozen. Bare suffixes
    (``to_q``) would adapt it too."""
    targets = config(saved).train.lora_targets
    add_lora(pipe.transformer, 4, 8, targets, seed=0)
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in pipe.transformer.named_parameters() if ".lora_A" in name}
    assert adapted and all(".attn." in name for name in adapted)
    blocks = len(pipe.transformer.transformer_blocks)
    assert len(adapted) == 8 * blocks - 1  # the last block is context_pre_only: no to_add_out
    bare = pipeline_for(config(saved).model, Path("unused")).transformer
    add_lora(bare, 4, 8, [t.removeprefix("attn.") for t in targets], seed=0)
    assert any(".attn2." in name for name, _ in bare.named_parameters() if "lora_A" in name)


@pytest.mark.slow
def test_star_training_step_and_evaluation_sampling(pipe, saved: Path, tmp_path: Path) -> None:
    cfg = config(saved, allocation="star")
    trainer = Trainer(cfg, pipe, BrightnessReward(), [RECORD, SECOND], tmp_path, progress=False)
    metrics = trainer.step()
    assert all(v == v for v in metrics.values())  # no NaN
    assert metrics["loss"] != 0
    lora_b = [p for n, p in pipe.transformer.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "the step moved the adapters"
    images = sample_ode(pipe, [RECORD["prompt"], SECOND["prompt"]], [0, 1], 2, 4.5, 2, progress=False)
    assert images.shape == (2, 3, 64, 64) and images.min() >= 0 and images.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("train", [{"algorithm": "nft", "allocation": "star"},
                                   {"algorithm": "dgpo", "allocation": "spatial"}],
                         ids=["nft", "dgpo"])
def test_forward_objectives_take_a_step_on_the_dual_attention_structure(pipe, saved: Path, tmp_path: Path,
                                                                        train: dict) -> None:
    cfg = config(saved, dgpo={"trunc_steps": 2, "timesteps": 2}, **train)
    trainer = Trainer(cfg, pipe, BrightnessReward(), [RECORD, SECOND], tmp_path, progress=False)
    metrics = trainer.step()
    assert all(v == v for v in metrics.values()) and metrics["grad_norm"] > 0
    lora_b = [p for n, p in pipe.transformer.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "the step moved the adapters"


def test_model_resolution_sets_the_image_size(saved: Path) -> None:
    """``model.resolution`` (Flow-GRPO trains SD3.5-M at 512 px, not its native 1024) sets
    diffusers' ``default_sample_size``, which rollouts and evaluation sample at."""
    cfg = config(saved)
    cfg.model.resolution = 128
    pipe = pipeline_for(cfg.model, Path("unused"))
    assert pipe.default_sample_size == 16
    images = sample_ode(pipe, [SECOND["prompt"]], [0], 1, 4.5, 1, progress=False)
    assert images.shape == (1, 3, 128, 128)
    cfg.model.resolution = 100
    with pytest.raises(ValueError, match=r"model\.resolution = 100 is not a multiple of 16"):
        pipeline_for(cfg.model, Path("unused"))
