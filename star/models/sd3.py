"""SD3 pipeline components from two sources through one code path.

(a) ``load_pipeline``: a real SD3 model (e.g. ``stabilityai/stable-diffusion-3.5-medium``) by hub
    id or local path, through diffusers' own ``StableDiffusion3Pipeline.from_pretrained``.
(b) ``build_mini_sd3``: the embedded miniature SD3 — the same diffusers/transformers classes
    (``SD3Transformer2DModel``, ``AutoencoderKL``, two ``CLIPTextModelWithProjection``, a
    ``T5EncoderModel``, ``FlowMatchEulerDiscreteScheduler``) built from small configs, with a
    tokenizer built locally from the world's vocabulary. It is saved with ``save_pretrained``
    and loaded back through (a).
"""

from __future__ import annotations


import logging
import re
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

from star.config import MiniModelConfig, ModelConfig
from rewards.hub import ModelLoadError, load_pretrained
from star.models.source import missing_model

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
# Ids 0..3 in this order; CLIP pools at the first EOS, so EOS must not be id 2 (transformers
# treats eos_token_id == 2 as the legacy "argmax of ids" convention).
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_pipeline(
    name_or_path: str | Path, dtype: str = "float32", revision: str | None = None
) -> StableDiffusion3Pipeline:
    """Load an SD3 pipeline (transformer, VAE, text encoders, tokenizers, scheduler).

    Works the same for a hub id (``stabilityai/stable-diffusion-3.5-medium``) and a local
    directory written by ``save_pretrained`` (the embedded miniature model).
    """
    pipe = load_pretrained(
        StableDiffusion3Pipeline.from_pretrained, str(name_or_path), "SD3 pipeline", "set model.pretrained to a local copy",
        dtype=DTYPES[dtype], revision=revision,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_for(model: ModelConfig, base_model_dir: Path) -> StableDiffusion3Pipeline:
    """The pipeline ``params.yaml`` asks for: the embedded base model or a real SD3."""
    problem = missing_model(model, base_model_dir)
    if problem:  # not a hub id to download: say how to build or point at it
        raise ModelLoadError(problem)
    source = base_model_dir if model.source == "embedded" else model.pretrained
    pipe = load_pipeline(source, dtype=model.dtype, revision=model.revision)
    configure_decoding(pipe.vae, model.decode_dtype)
    if model.resolution is not None:
        multiple = pipe.vae_scale_factor * pipe.transformer.config.patch_size
        if model.resolution % multiple:
            raise ValueError(f"model.resolution = {model.resolution} is not a multiple of {multiple} "
                             f"(VAE downsampling {pipe.vae_scale_factor} x patch {pipe.transformer.config.patch_size}) for {source}")
        pipe.default_sample_size = model.resolution // pipe.vae_scale_factor  # what diffusers' own calls default to
    return pipe


def build_world_tokenizer(
    words: list[str], charset: str, max_length: int, kind: str, char_tokens: bool = False
) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer over the world's words, falling back to characters.

    Whole words of the vocabulary are one token; anything else (the quoted strings of OCR
    prompts) is split into characters (``K7Q`` -> ``K ##7 ##Q``), so any string over ``charset``
    is representable; with ``char_tokens`` every character of ``charset`` is a token of its own
    wherever it stands (``K7Q`` -> ``K 7 Q``: one embedding per glyph, not one for the first
    place and one for the others). ``kind`` 'clip' wraps sequences in BOS ... EOS, 't5' appends
    EOS only, as the real CLIP and T5 tokenizers do.
    """
    vocab_tokens = list(SPECIAL_TOKENS) + ['"', ".", ","]
    vocab_tokens += sorted(set(words) - set(vocab_tokens))
    vocab_tokens += [c for c in charset if c not in vocab_tokens]
    vocab_tokens += ["##" + c for c in charset]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    backend = Tokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=32))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if char_tokens:
        characters = Regex("[" + "".join(re.escape(c) for c in charset) + "]")
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Split(characters, behavior="isolated")]
        )
    backend.decoder = decoders.WordPiece()
    if kind == "clip":
        template = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
        )
    elif kind == "t5":
        template = processors.TemplateProcessing(
            single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])]
        )
    else:
        raise ValueError(f"tokenizer kind must be 'clip' or 't5', got {kind!r}")
    backend.post_processor = template
    special = {"pad_token": PAD, "unk_token": UNK, "eos_token": EOS}
    if kind == "clip":
        special["bos_token"] = BOS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=max_length, padding_side="right", **special
    )


def _clip_encoder(cfg: MiniModelConfig, vocab_size: int, tokens: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.text_width,
        intermediate_size=4 * cfg.text_width,
        projection_dim=cfg.text_width,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=tokens,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
    )
    return CLIPTextModelWithProjection(config)


def _t5_encoder(cfg: MiniModelConfig, vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=cfg.t5_width,
        d_kv=cfg.t5_width // cfg.text_heads,
        d_ff=2 * cfg.t5_width,
        num_layers=cfg.text_layers,
        num_heads=cfg.text_heads,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
        decoder_start_token_id=SPECIAL_TOKENS.index(PAD),
        dropout_rate=0.0,
    )
    return T5EncoderModel(config)


def build_mini_sd3(
    cfg: MiniModelConfig, words: list[str], charset: str, image_size: int, seed: int
) -> StableDiffusion3Pipeline:
    """A freshly initialised miniature SD3 pipeline (seeded, so builds are repeatable)."""
    torch.manual_seed(seed)
    levels = len(cfg.vae_channels)
    latent_size = image_size // 2 ** (levels - 1)
    if latent_size % cfg.patch_size:
        raise ValueError(
            f"latent side {latent_size} (image_size {image_size} / 2**{levels - 1}) is not a "
            f"multiple of model.mini.patch_size={cfg.patch_size}"
        )
    clip_tok = build_world_tokenizer(words, charset, cfg.clip_tokens, kind="clip", char_tokens=cfg.char_tokens)
    t5_tok = build_world_tokenizer(words, charset, cfg.t5_tokens, kind="t5", char_tokens=cfg.char_tokens)
    vocab_size = len(clip_tok)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(16, cfg.vae_channels[0]),
        sample_size=image_size,
        scaling_factor=1.0,
        shift_factor=0.0,
        use_quant_conv=False,
        use_post_quant_conv=False,
        # With the mid-block attention the small VAE spreads a per-image code over the flat
        # background (docs/method.md §0).
        mid_block_add_attention=cfg.vae_mid_attention,
    )
    transformer = SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=cfg.patch_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads,
        joint_attention_dim=cfg.t5_width,
        caption_projection_dim=cfg.heads * cfg.head_dim,
        pooled_projection_dim=2 * cfg.text_width,
        pos_embed_max_size=latent_size // cfg.patch_size,
        qk_norm=cfg.qk_norm,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.scheduler_shift)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=_clip_encoder(cfg, vocab_size, cfg.clip_tokens),
        tokenizer=clip_tok,
        text_encoder_2=_clip_encoder(cfg, vocab_size, cfg.clip_tokens),
        tokenizer_2=clip_tok,
        text_encoder_3=_t5_encoder(cfg, vocab_size),
        tokenizer_3=t5_tok,
    )
    for module in (vae, transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        module.eval()  # as from_pretrained leaves them, so a save/load round trip is exact
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_sequence_length(pipe: StableDiffusion3Pipeline) -> int:
    """T5 tokens SD3 uses for this pipeline: 256 for SD3.5, the tokenizer's length when smaller."""
    return min(256, pipe.tokenizer_3.model_max_length) if pipe.tokenizer_3 is not None else 256


def encode_prompts(
    pipe: StableDiffusion3Pipeline, prompts: list[str], device: torch.device | str = "cpu", grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3 text conditioning through the pipeline's own ``encode_prompt``; without gradients
    unless ``grad`` (base pretraining with ``base.train_text_encoders``).

    Returns:
        prompt_embeds: (B, L_clip + L_t5, joint_attention_dim) — CLIP tokens, then T5 tokens.
        pooled: (B, pooled_projection_dim).
    """
    with torch.set_grad_enabled(grad):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts,
            prompt_2=prompts,
            prompt_3=prompts,
            device=torch.device(device),
            do_classifier_free_guidance=False,
            max_sequence_length=text_sequence_length(pipe),
        )
    return embeds, pooled


def latents_from_images(vae: AutoencoderKL, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (B, C, h, w) latents in SD3's normalised space."""
    dist = vae.encode(images.to(vae.dtype) * 2 - 1).latent_dist
    raw = dist.sample() if sample else dist.mean
    return (raw - vae.config.shift_factor) * vae.config.scaling_factor


def configure_decoding(vae: AutoencoderKL, dtype: str) -> None:
    """Set how ``images_from_latents`` decodes with this VAE: channels-last memory (same result
    to 1e-5, 1.4x faster on CPU) and, for 'bfloat16', autocast to bf16 (pixels within 0.01 of
    fp32, 3.6x faster together; method §7). The choice rides on the module, so every caller
    that decodes with ``pipe.vae`` gets it without threading the config through."""
    vae.to(memory_format=torch.channels_last)
    vae.decode_autocast = torch.bfloat16 if dtype == "bfloat16" and vae.dtype == torch.float32 else None


def images_from_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) normalised latents -> (B, 3, H, W) images in [0, 1] (as SD3's pipeline), in
    the precision ``configure_decoding`` chose (default: the VAE's own dtype)."""
    raw = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    autocast = getattr(vae, "decode_autocast", None)
    with torch.autocast(raw.device.type, dtype=autocast, enabled=autocast is not None):
        decoded = vae.decode(raw.contiguous(memory_format=torch.channels_last)).sample
    return (decoded.float() / 2 + 0.5).clamp(0, 1)
