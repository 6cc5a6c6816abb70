"""The one typed configuration, loaded from ``params.yaml``.

Every knob has a type, a default and a one-line description. Unknown keys, wrong types and
out-of-range values fail at load time with a message naming the key and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from star.world.vocab import (
    FULL_SIZE_MIXTURE,
    LOW_RES_MIXTURE,
    MAX_TEXT_LEN,
    PRETRAIN_MIXTURE,
    SIGN_CHARSET,
    TEXT_CHARSET,
    TEXT_LENGTH_WEIGHTS,
)


class ConfigError(ValueError):
    """A configuration file or override that does not validate; the message names each key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _knob(default: Any, description: str, **constraints: Any) -> Any:
    return Field(default=default, description=description, **constraints)


class MiniModelConfig(_Section):
    """Sizes of the embedded miniature SD3 (same diffusers/transformers classes as SD3.5)."""

    vae_channels: list[int] = _knob(
        [16, 32], "VAE block widths; the latent is downsampled 2**(len-1) times ([32]: full resolution)", min_length=1
    )
    vae_layers_per_block: int = _knob(1, "ResNet layers per VAE block", ge=1, le=4)
    vae_mid_attention: bool = _knob(
        False, "self-attention in the VAE's mid block, as SD3's VAE (off: latents see only a conv neighbourhood and GroupNorm statistics)"
    )
    latent_channels: int = _knob(4, "channels of the VAE latent", ge=1, le=16)
    layers: int = _knob(4, "joint-attention (MMDiT) blocks of the transformer", ge=1, le=48)
    heads: int = _knob(4, "attention heads per block", ge=1, le=64)
    head_dim: int = _knob(32, "width of one attention head", ge=8, le=256)
    patch_size: int = _knob(5, "latent patch size of the transformer", ge=1, le=8)
    qk_norm: Literal["rms_norm"] | None = _knob("rms_norm", "query/key norm, as SD3.5")
    text_width: int = _knob(64, "hidden width of each of the two CLIP text encoders", ge=8)
    text_layers: int = _knob(2, "layers of each text encoder (CLIP and T5)", ge=1, le=24)
    text_heads: int = _knob(2, "attention heads of each text encoder", ge=1, le=32)
    t5_width: int = _knob(128, "T5 width = joint_attention_dim; >= 2 * text_width", ge=16)
    clip_tokens: int = _knob(16, "CLIP token length (SD3.5: 77)", ge=8, le=77)
    t5_tokens: int = _knob(16, "T5 token length (SD3.5: 256)", ge=8, le=512)
    char_tokens: bool = _knob(
        False, "one token per character of quoted text ('K7Q' -> K 7 Q; false: K ##7 ##Q, WordPiece's continuations)"
    )
    scheduler_shift: float = _knob(3.0, "flow-match timestep shift of training and sampling (SD3.5: 3.0)", gt=0)

    @model_validator(mode="after")
    def _t5_holds_both_clips(self) -> MiniModelConfig:
        if self.t5_width < 2 * self.text_width:
            raise ValueError(
                f"t5_width={self.t5_width} must be >= 2 * text_width={2 * self.text_width}: SD3 "
                "pads the two concatenated CLIP embeddings to the T5 width"
            )
        return self

    @model_validator(mode="after")
    def _token_holds_a_patch(self) -> MiniModelConfig:
        patch_values = self.latent_channels * self.patch_size**2
        if self.heads * self.head_dim < patch_values:
            # v = ε − x₀ must carry the noise of every latent value of the patch; through a
            # narrower token a fixed share of ε is never removed and samples end as speckle.
            raise ValueError(
                f"heads * head_dim = {self.heads * self.head_dim} is narrower than a latent patch "
                f"(latent_channels * patch_size**2 = {patch_values}): the transformer cannot "
                "remove all of the noise (docs/method.md §0)"
            )
        return self


class ModelConfig(_Section):
    """Which text-to-image model is post-trained."""

    source: Literal["embedded", "pretrained"] = _knob(
        "embedded", "'embedded': the miniature SD3 built and pretrained here; 'pretrained': `pretrained`"
    )
    pretrained: str = _knob(
        "stabilityai/stable-diffusion-3.5-medium", "hub id or local path of a real SD3 pipeline"
    )
    revision: str | None = _knob(None, "hub revision of `pretrained` (None: the default branch)")
    dtype: Literal["float32", "bfloat16", "float16"] = _knob("float32", "weights dtype for inference")
    decode_dtype: Literal["float32", "bfloat16"] = _knob(
        "float32", "VAE decoding of sampled latents (bfloat16: autocast, pixels within 0.01; faster only on CPUs/GPUs with bf16 units; method §7)"
    )
    resolution: int | None = _knob(
        None, "image side in px for training and evaluation (None: the model's own; SD3.5-M 1024, Flow-GRPO trains at 512)",
        ge=8,
    )
    mini: MiniModelConfig = _knob(MiniModelConfig(), "sizes of the embedded miniature SD3")


class WorldConfig(_Section):
    """The procedural shapes world: image size and prompt-set sizes."""

    image_size: int = _knob(80, "side of rendered and generated images, pixels", ge=32, le=512)
    layout_cell: int = _knob(
        10, "objects sit one per cell of this many pixels (one transformer token; 0: anywhere)", ge=0
    )
    layout_stride: int = _knob(
        2, "objects only in every k-th row and column of cells (2: a 4x4 lattice on an 8x8 grid)", ge=1, le=4
    )
    train_prompts: int = _knob(600, "prompts per task family in each train split", ge=6)
    test_prompts: int = _knob(120, "prompts per task family in each test split", ge=6)
    text_layout: Literal["free", "cells"] = _knob(
        "cells", "OCR signs: 'free' (a sign anywhere, proportional font) or 'cells' (one character per 2x3 layout cells, centred)"
    )
    text_charset: str = _knob(SIGN_CHARSET, f"characters signs say, a subset of {TEXT_CHARSET}", min_length=1)
    text_lengths: dict[int, float] = _knob(
        dict(TEXT_LENGTH_WEIGHTS), f"sign-text length -> relative weight (lengths 1..{MAX_TEXT_LEN})", min_length=1
    )

    @field_validator("text_charset")
    @classmethod
    def _known_characters(cls, value: str) -> str:
        unknown = sorted(set(value) - set(TEXT_CHARSET))
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"{value!r} must be distinct characters of {TEXT_CHARSET!r} (the tokenizer's); unknown: {unknown}")
        return value

    @field_validator("text_lengths")
    @classmethod
    def _valid_lengths(cls, value: dict[int, float]) -> dict[int, float]:
        if any(not 1 <= k <= MAX_TEXT_LEN for k in value) or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"{value} needs lengths 1..{MAX_TEXT_LEN} with weights >= 0, not all 0")
        return dict(sorted(value.items()))  # a draw depends on key order: the same lengths draw the same signs

    @model_validator(mode="after")
    def _cells_fit_layouts(self) -> WorldConfig:
        if self.layout_cell and not 8 <= self.layout_cell <= self.image_size // 3:
            raise ValueError(
                f"layout_cell={self.layout_cell} must be 0 or 8..image_size/3={self.image_size // 3}: "
                "objects need at least 8 px, and four objects with a free cell between them a 3x3 grid"
            )
        if self.layout_cell and self.layout_stride > 1 and self.image_size // (self.layout_cell * self.layout_stride) < 2:
            raise ValueError(
                f"layout_stride={self.layout_stride} leaves fewer than 2x2 places for objects of "
                f"layout_cell={self.layout_cell} px in {self.image_size} px images"
            )
        if self.text_layout == "cells":
            from star.world.render import cell_sign_box  # the renderer's own check (numpy, PIL: only here)

            if not self.layout_cell:
                raise ValueError("text_layout='cells' puts characters on the layout grid: it needs layout_cell > 0")
            longest = max(self.text_lengths)
            try:
                cell_sign_box(longest, self.image_size, self.layout_cell)
            except ValueError as error:
                raise ValueError(f"text_layout='cells' with {longest}-character texts (text_lengths): {error}") from None
        return self


WORLD_SET = "world"
"""A ``prompt_sets`` value: the embedded world's set, generated by ``prepare``."""
GENEVAL_TEMPLATES = "templates"
"""``prompt_sets.geneval.train`` value: GenEval's templates over ``object_names`` (method §8)."""


class TaskPromptSets(_Section):
    """The training and evaluation prompts of one task: ``world`` or a prompt file."""

    train: str = _knob(WORLD_SET, "training prompts: 'world' (generated by prepare) or a prompt file", min_length=1)
    test: str = _knob(WORLD_SET, "evaluation prompts: 'world' or a prompt file", min_length=1)

    def files(self) -> dict[str, Path]:
        """The splits given as files: ``{"train"|"test": path}``."""
        return {split: Path(value) for split, value in (("train", self.train), ("test", self.test))
                if value not in (WORLD_SET, GENEVAL_TEMPLATES)}


class GenEvalPromptSets(TaskPromptSets):
    """GenEval's sets: files in GenEval's metadata format, or a training set from its templates."""

    train: str = _knob(
        WORLD_SET, "training prompts: 'world', 'templates' (GenEval's templates, evaluation prompts "
        "excluded) or a GenEval metadata .jsonl", min_length=1
    )
    object_names: Path | None = _knob(
        None, "GenEval's object_names.txt: the classes 'templates' draws and GenEval files are checked against"
    )
    templates_per_tag: int = _knob(400, "prompts per GenEval tag that 'templates' writes", ge=1)
    templates_seed: int = _knob(0, "random seed of the 'templates' generator", ge=0)


class PromptSetsConfig(_Section):
    """Per task, which prompts ``prepare`` writes to ``paths.prompts`` for training and evaluation.

    ``world`` is the embedded world's generated set; a path names a file in the public formats
    (GenEval metadata JSON lines, OCR prompts with the text in double quotes, plain prompts),
    read and validated by ``prepare``; ``train`` and ``evaluate`` read only what it wrote.
    """

    geneval: GenEvalPromptSets = Field(default_factory=GenEvalPromptSets)
    ocr: TaskPromptSets = Field(default_factory=TaskPromptSets)
    pickscore: TaskPromptSets = Field(default_factory=TaskPromptSets)

    @model_validator(mode="after")
    def _one_world_per_task(self) -> PromptSetsConfig:
        if self.ocr.train == GENEVAL_TEMPLATES or self.pickscore.train == GENEVAL_TEMPLATES:
            which = "ocr" if self.ocr.train == GENEVAL_TEMPLATES else "pickscore"
            raise ValueError(f"prompt_sets.{which}.train = 'templates': only GenEval has a template generator")
        for task in ("geneval", "ocr", "pickscore"):
            sets: TaskPromptSets = getattr(self, task)
            if sets.test == GENEVAL_TEMPLATES:
                raise ValueError(f"prompt_sets.{task}.test = 'templates': evaluation prompts are 'world' or a file")
            if (sets.train == WORLD_SET) != (sets.test == WORLD_SET):
                world, other = ("train", "test") if sets.train == WORLD_SET else ("test", "train")
                raise ValueError(
                    f"prompt_sets.{task}.{world} is 'world' but prompt_sets.{task}.{other} is "
                    f"{getattr(sets, other)!r}: the world's prompts only suit the world's test set; "
                    f"give prompt_sets.{task}.{world} as a file too"
                    + (" (or 'templates')" if task == "geneval" and world == "train" else "")
                )
        if self.geneval.train == GENEVAL_TEMPLATES and self.geneval.object_names is None:
            raise ValueError("prompt_sets.geneval.train = 'templates' needs prompt_sets.geneval.object_names "
                             "(GenEval's object_names.txt)")
        return self


class BaseConfig(_Section):
    """Base pretraining of the miniature SD3 on world images (VAE, then transformer)."""

    vae_steps: int = _knob(1000, "VAE optimisation steps", ge=0)
    vae_batch_size: int = _knob(16, "images per VAE step", ge=1)
    vae_lr: float = _knob(2e-3, "VAE AdamW learning rate", gt=0)
    vae_kl_weight: float = _knob(1e-6, "weight of the VAE's KL term", ge=0)
    vae_foreground_weight: float = _knob(
        0.0, "extra weight of the VAE's reconstruction error on pixels off the grey background (0: plain MSE; method §0)", ge=0
    )
    steps: int = _knob(5250, "transformer flow-matching steps (low-resolution ones included)", ge=0)
    low_res_size: int = _knob(
        40, "train the VAE, then the transformer's first steps, on world images of this size (0: off), as SD3 does", ge=0
    )
    low_res_steps: int = _knob(
        1500, "transformer steps at low_res_size before the full size (method §0: 2500 at 80 px letter the signs)", ge=0
    )
    low_res_interleave: int = _knob(
        3, "in the full-size phase every n-th step trains on a low-resolution batch (0: none; n >= 2; method §0)", ge=0
    )
    low_res_signs: bool = _knob(
        False, "the low-resolution transformer steps train on that set's (free) signs too (false: only the VAE sees them)"
    )
    batch_size: int = _knob(32, "images per transformer step", ge=1)
    lr: float = _knob(1e-3, "transformer (and text encoders') AdamW learning rate, cosine decay after warm-up", gt=0)
    warmup_steps: int = _knob(100, "linear learning-rate warm-up steps", ge=0)
    final_lr_fraction: float = _knob(
        0.1, "each transformer phase's cosine decays the learning rate to this fraction of lr", ge=0, le=1
    )
    weight_decay: float = _knob(0.0, "AdamW weight decay", ge=0)
    grad_clip: float = _knob(1.0, "gradient-norm clip", gt=0)
    caption_dropout: float = _knob(0.1, "probability of the empty caption (for CFG)", ge=0, le=1)
    ema_decay: float = _knob(0.998, "EMA decay of transformer weights; the EMA is what is saved", ge=0, lt=1)
    train_text_encoders: bool = _knob(
        True, "train the miniature's CLIP and T5 encoders with the transformer (false: frozen at init, as SD3)"
    )
    dataset_size: int = _knob(20000, "world images rendered once and reused across steps", ge=64)
    mixture: dict[str, float] = _knob(
        dict(LOW_RES_MIXTURE), "family -> share of the low-resolution (VAE) images (GenEval tags, 'ocr', 'caption')", min_length=1
    )
    full_size_mixture: dict[str, float] | None = _knob(
        dict(FULL_SIZE_MIXTURE), "family -> share of the full-size images (null: `mixture`); the low-resolution set keeps `mixture`"
    )
    checkpoint_every: int = _knob(500, "steps between resumable checkpoints", ge=1)

    @field_validator("low_res_interleave")
    @classmethod
    def _interleave_leaves_full_size_steps(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 would train every full-size step at low resolution: use 0 (none) or n >= 2")
        return value

    @field_validator("mixture", "full_size_mixture")
    @classmethod
    def _known_families(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - set(PRETRAIN_MIXTURE))
        if unknown or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"{value}: families must be among {sorted(PRETRAIN_MIXTURE)} (unknown: {unknown}), "
                             "weights >= 0, not all 0")
        # A draw depends on key order, the config's equality and fingerprint do not: one canonical
        # order makes the same shares draw the same images whatever order params.yaml lists them in.
        return {family: value[family] for family in PRETRAIN_MIXTURE if family in value}


AllocationMode = Literal["none", "uniform_region", "temporal", "spatial", "star", "oracle", "shuffled"]
"""Advantage allocation (docs/method.md §5); ``oracle`` and ``shuffled`` are diagnostic controls."""
TemporalRule = Literal["map_change", "sigma"]
"""How STAR weighs the denoising steps (docs/method.md §5)."""
CoreSegments = Literal["both", "clip", "t5"]
"""Which segments of SD3's text sequence carry the core-token positions (docs/method.md §3.1)."""


class TrainConfig(_Section):
    """RL post-training (docs/method.md §1–§6); the reference values of STAR_METHOD §7 are
    scaled down for the embedded default."""

    algorithm: Literal["grpo", "fdfo"] = _knob("grpo", "'grpo': Flow-GRPO/STAR objective; 'fdfo': finite differences")
    allocation: AllocationMode = _knob(
        "star", "advantage allocation (method §5): 'none' is Flow-GRPO; 'oracle'/'shuffled' are diagnostic controls"
    )
    iterations: int = _knob(32, "RL iterations: sample -> score -> advantages -> update", ge=1)
    prompts_per_iteration: int = _knob(16, "prompts (groups) sampled per iteration", ge=1)
    prompt_pool: int = _knob(
        16, "train on a fixed seeded subset of this many training prompts (0: all of them)", ge=0
    )
    group_size: int = _knob(8, "rollouts per prompt (GRPO group; SD3.5 reference 24)", ge=2)
    steps: int = _knob(4, "denoising steps of training rollouts", ge=2)
    train_fraction: float = _knob(
        0.99, "train the first floor(f * steps) steps, as Flow-GRPO's timestep_fraction (0.99: all but the last)", gt=0, le=1
    )
    sde_window: int = _knob(
        0, "SDE steps per rollout, a window drawn in the first half each iteration; the rest ODE (0: all SDE)", ge=0
    )
    noise_level: float = _knob(0.7, "SDE noise level a (method §1)", gt=0)
    guidance_scale: float = _knob(4.5, "classifier-free guidance scale of rollouts", ge=1)
    same_noise_per_group: bool = _knob(False, "every rollout of a group starts from the same noise")
    inner_epochs: int = _knob(1, "passes over each iteration's rollouts", ge=1)
    minibatch_size: int = _knob(32, "rollouts per forward/backward pass", ge=1)
    accumulation_steps: int = _knob(
        64, "minibatches summed into one optimizer step, across iterations if needed (method §4.1)", ge=1
    )
    optimizer: Literal["adamw", "normalized_sgd"] = _knob(
        "normalized_sgd", "'adamw', or 'normalized_sgd': steps of length lr along the gradient (method §4.1)"
    )
    lr: float = _knob(0.5, "learning rate (normalized_sgd: the L2 length of each step)", gt=0)
    weight_decay: float = _knob(1e-4, "decoupled weight decay", ge=0)
    grad_clip: float = _knob(1.0, "gradient-norm clip", gt=0)
    clip_range: float = _knob(1e-4, "PPO clip range epsilon of image-level and per-region ratios (method §4)", gt=0)
    kl_beta: float = _knob(0.0, "KL-to-reference weight beta (method §4)", ge=0)
    global_std: bool = _knob(True, "normalise advantages by the batch's std (Flow-GRPO's configs) instead of the group's")
    advantage_clip: float = _knob(5.0, "advantages are clipped to +-this", gt=0)
    gamma: float = _knob(3.0, "sharpening exponent of allocation maps (method §3.3; 3 chosen in §4.1)", gt=0)
    mix: float = _knob(1.0, "strength lambda of the map vs uniform (method §3)", ge=0, le=1)
    w_min: float = _knob(0.25, "lower clamp of allocation weights", ge=0, le=1)
    w_max: float = _knob(4.0, "upper clamp of allocation weights", ge=1)
    temporal_rule: TemporalRule = _knob(
        "map_change", "temporal weight of 'temporal'/'star' (method §5): map_change or sigma"
    )
    capture_blocks: list[int] | None = _knob(None, "joint blocks read by the capture (None: the middle half)")
    core_segments: CoreSegments = _knob("both", "text segments whose core tokens the capture reads: both, clip or t5")
    lora_rank: int = _knob(8, "LoRA rank (0: full fine-tuning; SD3.5 reference 32)", ge=0)
    lora_alpha: int = _knob(16, "LoRA alpha (SD3.5 reference 64)", ge=1)
    lora_targets: list[str] = _knob(
        ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
         "attn.add_v_proj", "attn.to_add_out"],
        "module-name suffixes that get LoRA adapters: the joint attention only, as Flow-GRPO (method §7)",
    )
    ema_decay: float = _knob(0.9, "EMA decay of the trained weights (0: off); evaluation uses the EMA", ge=0, lt=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = _knob("no", "accelerate mixed precision")
    gradient_checkpointing: bool = _knob(False, "recompute activations in the backward pass")
    fdfo_clip: float = _knob(0.03, "FDFO clip (method §6)", gt=0)
    fdfo_base_weight: float = _knob(0.0, "FDFO weight of ||v - v_base||^2", ge=0)
    checkpoint_every: int = _knob(10, "iterations between resumable checkpoints", ge=1)
    log_images_every: int = _knob(32, "iterations between sample grids and map overlays", ge=1)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_from_yaml_false(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `no` as false, and `dvc exp run -S` rewrites params.yaml
        # without the quotes: read false back as accelerate's "no".
        return "no" if value is False else value

    @model_validator(mode="after")
    def _window_fits(self) -> TrainConfig:
        if self.sde_window > self.steps:
            raise ValueError(f"sde_window = {self.sde_window} exceeds steps = {self.steps}")
        if int(self.train_fraction * self.steps) < 1:
            raise ValueError(
                f"train_fraction = {self.train_fraction} trains floor({self.train_fraction} * {self.steps}) = 0 of the "
                f"{self.steps} steps; choose at least {1 / self.steps:.3g}"
            )
        return self


class WorldClipConfig(_Section):
    """The embedded PickScore stand-in: a small CLIPModel trained contrastively on world images."""

    width: int = _knob(64, "hidden width of the text and vision towers", ge=8)
    layers: int = _knob(2, "transformer layers of each tower", ge=1, le=12)
    heads: int = _knob(2, "attention heads of each tower", ge=1, le=16)
    patch_size: int = _knob(8, "vision patch size in pixels", ge=1)
    projection_dim: int = _knob(64, "shared embedding width", ge=8)
    steps: int = _knob(1500, "contrastive training steps", ge=0)
    batch_size: int = _knob(64, "image-caption pairs per step", ge=2)
    lr: float = _knob(1e-3, "AdamW learning rate", gt=0)
    dataset_size: int = _knob(8000, "world images rendered for training", ge=64)
    eval_size: int = _knob(512, "held-out images (unseen combinations) for the accuracy report", ge=32)


class RewardsConfig(_Section):
    """Which rewards score images (a weighted mix), and their backends."""

    task: Literal["geneval", "ocr", "pickscore"] = _knob("geneval", "training task: its prompt set and default reward")
    weights: dict[Literal["geneval", "ocr", "pickscore"], float] | None = _knob(
        None, "reward mix as name -> weight (None: the task's own reward with weight 1)"
    )
    device: str = _knob("cpu", "torch device of reward models")
    geneval_detector: Literal["world", "mask2former"] = _knob(
        "world", "GenEval detector: the shapes-world detector or Mask2Former + CLIP colours"
    )
    geneval_partial_credit: bool = _knob(True, "train on Flow-GRPO's partial credit (else strict 0/1)")
    detector_model: str = _knob(
        "facebook/mask2former-swin-small-coco-instance", "Mask2Former hub id or local path"
    )
    color_model: str = _knob("openai/clip-vit-large-patch14", "CLIP for zero-shot colour, hub id or path")
    ocr_backend: Literal["rapidocr", "easyocr"] = _knob("rapidocr", "OCR engine (easyocr: optional extra)")
    easyocr_model_dir: Path | None = _knob(None, "easyocr weights directory (None: easyocr's default)")
    pickscore_source: Literal["embedded", "pretrained"] = _knob(
        "embedded", "'embedded': the world CLIP stand-in; 'pretrained': `pickscore_model`"
    )
    pickscore_model: str = _knob("yuvalkirstain/PickScore_v1", "PickScore CLIPModel hub id or local path")
    pickscore_processor: str = _knob(
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "PickScore processor hub id or local path"
    )
    world_clip: WorldClipConfig = _knob(WorldClipConfig(), "the embedded PickScore stand-in")

    def for_task(self, task: Literal["geneval", "ocr", "pickscore"]) -> RewardsConfig:
        """These backends scoring ``task`` with its own reward alone (no mix): how evaluation scores."""
        return self.model_copy(update={"task": task, "weights": None})


class EvalConfig(_Section):
    """Evaluation sampling (ODE, classifier-free guidance, fixed seeds)."""

    steps: int = _knob(20, "ODE denoising steps", ge=1)
    guidance_scale: float = _knob(4.5, "classifier-free guidance scale (1 = off)", ge=1)
    batch_size: int = _knob(32, "images sampled per forward batch", ge=1)
    seed: int = _knob(2024, "seed of evaluation noise (fixed across checkpoints)")
    noises: int = _knob(4, "initial noises per test prompt, the same for every checkpoint (paired comparisons)", ge=1)
    bootstrap: int = _knob(2000, "bootstrap resamples of the confidence intervals (star/stats.py)", ge=100)
    geneval_per_tag: int = _knob(16, "GenEval test prompts per task (balanced subset, file order)", ge=1)
    ocr_prompts: int = _knob(16, "OCR test prompts (file order)", ge=1)
    pickscore_prompts: int = _knob(16, "preference-task test prompts (file order)", ge=1)
    grid: int = _knob(4, "side of the sample grid kept per task", ge=1, le=16)


class TrackingConfig(_Section):
    """MLflow tracking."""

    uri: str = _knob("sqlite:///mlruns.db", "MLflow tracking URI (local store inside the repo)")
    artifacts: str = _knob("mlartifacts", "artifact root for a new experiment (local folder)")
    experiment: str = _knob("star", "MLflow experiment name")


class PathsConfig(_Section):
    """Where stages write their outputs (relative to the repo root)."""

    prompts: Path = _knob(Path("data/prompts"), "the prepared prompt sets")
    base_model: Path = _knob(Path("models/base"), "the pretrained embedded SD3 pipeline")
    work: Path = _knob(Path("outputs"), "checkpoints and scratch of running stages")
    metrics: Path = _knob(Path("metrics"), "metrics JSON files read by `dvc metrics`")
    reward_models: Path = _knob(Path("models/rewards"), "embedded reward models (the world CLIP)")
    checkpoints: Path = _knob(Path("models/checkpoints"), "trained variants, one folder per variant")
    reports: Path = _knob(Path("reports"), "study report: tables, curves, map figures")
    eval_samples: Path = _knob(Path("eval"), "sample grids of every evaluated checkpoint")
    task_study: Path = _knob(
        Path("studies/tasks"), "the task study's checkpoints, metrics, sample grids and report (its own metrics/, ...)"
    )


VARIANT_REWARDS = "rewards"
"""The key of a study variant whose mapping overrides the `rewards` section (its other keys are
`train` knobs)."""


class StudyConfig(_Section):
    """The comparison `dvc repro` runs: variants (train-section overrides) x seeds, evaluated on tasks."""

    variants: dict[str, dict[str, Any]] = _knob(
        {
            "none": {"allocation": "none"},
            "temporal": {"allocation": "temporal"},
            "spatial": {"allocation": "spatial"},
            "star": {"allocation": "star"},
            "fdfo": {"algorithm": "fdfo"},
            "oracle": {"allocation": "oracle"},
        },
        "variant name -> overrides of the `train` section, and of `rewards` under a 'rewards' key "
        "(e.g. {allocation: star, rewards: {task: ocr}}); one trained checkpoint each",
        min_length=1,
    )
    seeds: list[int] = _knob([0, 1, 2], "training seeds of every variant (mean +- spread in the report)", min_length=1)
    eval_tasks: list[Literal["geneval", "ocr", "pickscore"]] = _knob(
        ["geneval", "ocr", "pickscore"], "tasks every checkpoint is evaluated on", min_length=1
    )
    sweep_tasks: list[Literal["geneval", "ocr", "pickscore"]] = _knob(
        ["geneval"], "training tasks of the Prefect sweep (one `dvc exp run` per task)", min_length=1
    )

    task_variants: dict[str, dict[str, Any]] = _knob(
        {
            "ocr-none": {"allocation": "none", VARIANT_REWARDS: {"task": "ocr"}},
            "ocr-star": {"allocation": "star", VARIANT_REWARDS: {"task": "ocr"}},
            "ocr-mix": {"allocation": "none", VARIANT_REWARDS: {"task": "ocr", "weights": {"ocr": 1.0, "pickscore": 0.026}}},
            "ocr-fdfo": {"algorithm": "fdfo", VARIANT_REWARDS: {"task": "ocr"}},
            "pick-none": {"allocation": "none", VARIANT_REWARDS: {"task": "pickscore"}},
            "pick-star": {"allocation": "star", VARIANT_REWARDS: {"task": "pickscore"}},
        },
        "the task study (`dvc repro report_tasks`): variants as `variants`, trained on the OCR and preference "
        "tasks and a reward mix; same seeds, outputs under paths.task_study",
        min_length=1,
    )

    @model_validator(mode="after")
    def _variants_are_train_knobs(self) -> StudyConfig:
        for field, variants in (("variants", self.variants), ("task_variants", self.task_variants)):
            for name, overrides in variants.items():
                check_variant(f"{field}.{name}", overrides)
        shared = sorted(set(self.variants) & set(self.task_variants))
        if shared:
            raise ValueError(f"variants and task_variants share the names {shared}: their checkpoints would collide "
                             "in the MLflow runs and commands that name them")
        return self


def check_variant(key: str, overrides: dict[str, Any]) -> None:
    """A study variant's name is a file-name part and its overrides are valid `train` knobs (its
    'rewards' mapping valid `rewards` knobs); raises ValueError naming ``key`` and the knob."""
    name = key.rpartition(".")[2]
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"variant name {name!r} must be letters, digits, '-' or '_'")
    train = {k: v for k, v in overrides.items() if k != VARIANT_REWARDS}
    rewards = overrides.get(VARIANT_REWARDS, {})
    for prefix, section, values in (("", TrainConfig, train), (f"{VARIANT_REWARDS}.", RewardsConfig, rewards)):
        try:
            section.model_validate(values)
        except ValidationError as error:
            item = error.errors()[0]
            knob = prefix + ".".join(str(part) for part in item["loc"])
            raise ValueError(f"{key}.{knob} = {item.get('input')!r}: {item['msg']}") from None


STUDIES: dict[str, str] = {
    "default": "study.variants, outputs in paths (`dvc repro report`)",
    "tasks": "study.task_variants, outputs under paths.task_study (`dvc repro report_tasks`)",
}
"""The platform's two comparisons; ``--study`` of the train, evaluate and report stages picks one."""


class Config(_Section):
    """Everything a run needs; ``params.yaml`` is a (partial) instance of it."""

    seed: int = _knob(0, "global seed: a run is repeatable bit for bit on CPU")
    threads: int = _knob(0, "torch CPU threads (0: torch's default)", ge=0)
    model: ModelConfig = _knob(ModelConfig(), "the text-to-image model")
    world: WorldConfig = _knob(WorldConfig(), "the shapes world")
    prompt_sets: PromptSetsConfig = _knob(PromptSetsConfig(), "public prompt sets")
    base: BaseConfig = _knob(BaseConfig(), "base pretraining")
    train: TrainConfig = _knob(TrainConfig(), "RL post-training")
    rewards: RewardsConfig = _knob(RewardsConfig(), "rewards")
    eval: EvalConfig = _knob(EvalConfig(), "evaluation sampling")
    tracking: TrackingConfig = _knob(TrackingConfig(), "MLflow tracking")
    paths: PathsConfig = _knob(PathsConfig(), "output locations")
    study: StudyConfig = _knob(StudyConfig(), "the variants x seeds comparison")

    @model_validator(mode="after")
    def _low_resolution_fits(self) -> Config:
        size, mini = self.base.low_res_size, self.model.mini
        token = 2 ** (len(mini.vae_channels) - 1) * mini.patch_size
        if size and (size % token or size >= self.world.image_size or self.world.layout_cell > size // 3):
            raise ValueError(
                f"base.low_res_size = {size} must be a multiple of the {token} px token, smaller than "
                f"world.image_size = {self.world.image_size}, and hold 3x3 layout cells of {self.world.layout_cell} px"
            )
        if self.base.low_res_steps > self.base.steps:
            raise ValueError(f"base.low_res_steps = {self.base.low_res_steps} exceeds base.steps = {self.base.steps}")
        if self.base.low_res_interleave and not size:
            raise ValueError(f"base.low_res_interleave {self.base.low_res_interleave} needs a low-resolution set: "
                             "low_res_size is 0")
        return self

    def for_study(self, study: str) -> Config:
        """This config for one of STUDIES: ``tasks`` swaps ``study.task_variants`` and
        ``study.variants`` (the study's own variants are then ``variants``, and the two sets stay
        disjoint) and puts the checkpoints, metrics, sample grids and report under
        ``paths.task_study`` (the base model, prompts and reward models stay shared)."""
        if study not in STUDIES:
            raise ConfigError(f"unknown study {study!r}; the studies are {sorted(STUDIES)}")
        if study == "default":
            return self
        root = self.paths.task_study
        paths = {"checkpoints": root / "checkpoints", "metrics": root / "metrics", "eval_samples": root / "eval",
                 "reports": root / "reports"}
        return self.model_copy(update={"paths": self.paths.model_copy(update=paths),
                                       "study": self.study.model_copy(update={"variants": self.study.task_variants,
                                                                                "task_variants": self.study.variants})})

    def for_variant(self, variant: str, seed: int | None = None) -> Config:
        """This config with ``study.variants[variant]`` applied to ``train`` (its ``rewards`` key to
        ``rewards``: the variant's training task or reward mix) and ``seed`` set."""
        if variant not in self.study.variants:
            raise ConfigError(f"unknown variant {variant!r}; this study's variants are {sorted(self.study.variants)} "
                              "(study.variants; with --study tasks, study.task_variants)")
        data = self.model_dump()
        overrides = dict(self.study.variants[variant])
        data["rewards"] = _merge(data["rewards"], overrides.pop(VARIANT_REWARDS, {}))
        data["train"] = _merge(data["train"], overrides)
        if seed is not None:
            data["seed"] = seed
        return config_from_dict(data, f"variant {variant!r}")


DELETE = object()
"""An override value that removes the key from the params file, so it takes its default
(Hydra's ``~key``)."""


def _key_source(key: str, overridden: set[str], source: str) -> str:
    """``-S`` when the key (or a section above it) was overridden, else the params file."""
    parts = key.split(".")
    from_override = any(".".join(parts[:n]) in overridden for n in range(1, len(parts) + 1))
    return "-S" if from_override else source


def _describe(error: ValidationError, source: str, overridden: set[str] = frozenset()) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not key or message.startswith(f"{key}."):  # a check across knobs: its message names them
            lines.append(f"  {message}")
        else:
            lines.append(f"  {key} = {item.get('input')!r} (from {_key_source(key, overridden, source)}): {item['msg']}")
    if len(lines) == 2:  # one problem, one line
        return f"{lines[0]} {lines[1].strip()}"
    return "\n".join(lines)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if value is DELETE:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys of the leaves of a nested dict."""
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys |= _dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def config_from_dict(data: dict[str, Any], source: str = "<dict>", overridden: set[str] = frozenset()) -> Config:
    """Validate a nested dict; raises ConfigError naming every bad key, its value and its source
    (``overridden``: the dotted keys that came from ``-S``)."""
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, overridden)) from None


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Load ``params.yaml`` (a missing key takes its default) with optional nested overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not data:  # an empty file would silently run every default: the full study
        raise ConfigError(
            f"{path} has no keys; pass the defaults explicitly (`python -m pipelines.knobs` lists them) "
            "or use the shipped params.yaml"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    overrides = overrides or {}
    return config_from_dict(_merge(data, overrides), source=str(path), overridden=_dotted_keys(overrides))


def describe_knobs(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Every knob as (key, type, default, description), for docs and `--help` style listings."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_knobs(annotation, prefix=f"{key}."))
        else:
            type_name = getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
            rows.append((key, type_name, repr(field.default), field.description or ""))
    return rows


def fingerprint(cfg: Config, sections: list[str]) -> str:
    """A short hash of the seed and the given sections: checkpoints resume only into the same
    configuration."""
    import hashlib
    import json

    dump = cfg.model_dump(mode="json")
    payload = json.dumps({"seed": cfg.seed, **{s: dump[s] for s in sections}}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def write_params(cfg: Config, path: str | Path) -> Path:
    """Write every knob of ``cfg`` as a complete ``params.yaml`` (DVC needs every key it tracks)."""
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path
