"""Tiny models with the real architectures, saved the way the hub stores them, so the real
loading code (``from_pretrained`` by path) is what the tests exercise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessorPil,
    SwinConfig,
)

TINY_LABELS = ["dog", "cat", "car", "apple"]


def save_tiny_detector(root: Path) -> tuple[str, str]:
    """A tiny Mask2Former over ``TINY_LABELS`` (biased towards 'dog') and a tiny CLIP under
    ``root``; returns their paths (``rewards.detector_model``, ``rewards.color_model``)."""
    torch.manual_seed(0)
    swin = SwinConfig(image_size=64, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=32, num_queries=6,
        id2label=dict(enumerate(TINY_LABELS)), label2id={name: i for i, name in enumerate(TINY_LABELS)},
    )
    segmenter = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # 'dog' gets ~0.93 probability, every other class < 0.3
        segmenter.class_predictor.bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0]))
    segmenter.save_pretrained(root / "seg")
    Mask2FormerImageProcessorPil(size={"shortest_edge": 384}).save_pretrained(root / "seg")

    chars = sorted(ByteLevel.alphabet())
    vocab = ["<|startoftext|>", *chars, *(c + "</w>" for c in chars), "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=[], model_max_length=48)
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    text = dict(tower, vocab_size=len(vocab), max_position_embeddings=48, bos_token_id=0,
                eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1)  # pool at the first <|endoftext|>
    vision = dict(tower, image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    clip_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip_processor.save_pretrained(root / "clip")
    return str(root / "seg"), str(root / "clip")


# ------------------------------------------------------------------------------ SD3.5-M's structure

SD35_MEDIUM_TRANSFORMER: dict = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "pos_embed_max_size": 384,
    "dual_attention_layers": list(range(13)), "qk_norm": "rms_norm",
}
"""The published ``transformer/config.json`` of stabilityai/stable-diffusion-3.5-medium (MMDiT-X:
dual attention in its first 13 of 24 blocks)."""

TOKENIZER_CORPUS = [
    "a photo of a red bench and a blue cow", "a photo of two clocks", "a photo of a dog right of a teddy bear",
    "a photo of a purple wine glass and a black apple", 'a sign that says "OPEN"', "a cat sitting on a sofa",
    "a painting of a lighthouse at sunset", "a photo of four handbags", "a green bus and a purple microwave",
]


def _clip_bpe_tokenizer(root: Path, corpus: list[str]) -> Any:
    """A real ``CLIPTokenizer`` (byte-level BPE with ``</w>`` word ends, as SD3's) whose merges are
    learnt here from ``corpus``: no package ships CLIP's vocabulary without pulling torchvision."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.train_from_iterator([line.lower() for line in corpus * 20], trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False))
    learnt = json.loads(bpe.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in learnt["merges"]]
    tokens = ["<|startoftext|>", *alphabet, *(c + "</w>" for c in alphabet),
              *("".join(m.split(" ")) for m in merges), "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77,
                         pad_token="<|endoftext|>")


def _t5_sentencepiece_tokenizer(root: Path, corpus: list[str]) -> Any:
    """A real ``T5TokenizerFast`` over a SentencePiece unigram model trained here on ``corpus``
    (T5's own spiece.model is not shipped by any package)."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 20), model_prefix=str(root / "spiece"), vocab_size=56,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    return T5TokenizerFast.from_pretrained(root, extra_ids=0, model_max_length=512)  # converts spiece.model


def save_sd35_structured_pipeline(root: Path, layers: int = 4, dual_layers: int = 2, seed: int = 0) -> Path:
    """A ``StableDiffusion3Pipeline`` with SD3.5-M's structure at reduced depth and width, saved
    with ``save_pretrained`` under ``root/pipeline`` (load it as ``model.source: pretrained``).

    Kept from SD3.5-M: dual attention in the first blocks, ``qk_norm`` rms_norm, patch 2,
    ``pos_embed_max_size`` 384, 16 latent channels, joint attention dim 4096 (T5's width),
    pooled projection 2048 (CLIP-L 768 + CLIP-G 1280 projections), CLIP 77 and T5 256 tokens,
    a VAE with 8x downsampling, mid-block attention and SD3's latent scale and shift.
    Reduced: ``layers`` blocks (the first ``dual_layers`` dual), 2 heads of 8, one- and
    two-layer text encoders, small vocabularies; 64 px images (8x8 latents, 4x4 tokens).
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizers = root / "tokenizers"
    tokenizers.mkdir(parents=True, exist_ok=True)
    clip_tokenizer = _clip_bpe_tokenizer(tokenizers, TOKENIZER_CORPUS)
    t5_tokenizer = _t5_sentencepiece_tokenizer(tokenizers, TOKENIZER_CORPUS)
    transformer = SD3Transformer2DModel(**(SD35_MEDIUM_TRANSFORMER | {
        "sample_size": 8, "num_layers": layers, "dual_attention_layers": tuple(range(dual_layers)),
        "attention_head_dim": 8, "num_attention_heads": 2, "caption_projection_dim": 16,
    }))
    eos = clip_tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def clip(projection: int) -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=projection,
            bos_token_id=0, eos_token_id=eos, pad_token_id=eos))

    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=4096, d_kv=8, d_ff=32, num_layers=1,
                                 num_heads=2, feed_forward_proj="gated-gelu", is_encoder_decoder=False))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=16, norm_num_groups=4, sample_size=64, scaling_factor=1.5305, shift_factor=0.0609,
        use_quant_conv=False, use_post_quant_conv=False,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip(768), tokenizer=clip_tokenizer, text_encoder_2=clip(1280), tokenizer_2=clip_tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"
