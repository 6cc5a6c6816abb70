"""Base pretraining of the embedded miniature SD3 on rendered world images.

Three phases, each resumable from an atomic checkpoint: the VAE (reconstruction + small KL),
the MMDiT transformer with rectified-flow matching (docs/method.md §0) and caption dropout so
that classifier-free guidance works, then a short grounding phase that teaches the transformer's
text→image attention to find the objects (``base.grounding_steps``). The text encoders train with the transformer unless
``base.train_text_encoders`` is off (then frozen, as in SD3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusion3Pipeline
from tqdm.auto import tqdm

from star.config import BaseConfig, Config
from star.method.attention import AttentionCapture
from star.models.sd3 import build_mini_sd3, encode_prompts, latents_from_images
from star.rl import checkpoint
from star.rl.ema import EMA
from star.world.grounding import GroundingTargets, grounding_loss, grounding_targets
from star.world.prompts import DEFAULT_TEXT, SignText, sample_training_scene, scene_boxes, vocabulary, world_text
from star.world.render import FREE, Box, Layout, render_scene, world_layout
from star.world.vocab import BACKGROUND_RGB, PRETRAIN_MIXTURE, TEXT_CHARSET

MetricsCallback = Callable[[str, dict[str, float], int], None]
"""Called as (phase, metrics, step); pipelines use it to log to MLflow."""


@dataclass
class WorldDataset:
    """Rendered training examples. images: (N, 3, H, W) uint8; captions and tags (the family:
    a GenEval tag, "ocr" or "caption"): N strings each; records (the prompt records, which name
    the core words) and boxes (where each scene's content is): N each, or empty when not kept."""

    images: torch.Tensor
    captions: list[str]
    tags: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    boxes: list[list[Box]] = field(default_factory=list)

    def subset(self, keep: list[int]) -> WorldDataset:
        pick = (lambda items: [items[i] for i in keep] if items else [])  # noqa: E731
        return WorldDataset(self.images[keep], pick(self.captions), pick(self.tags), pick(self.records),
                            pick(self.boxes))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """(B, 3, H, W) float images in [0, 1] and their captions."""
        return self.images[index].float() / 255, [self.captions[i] for i in index.tolist()]


def render_world_dataset(
    n: int,
    image_size: int,
    seed: int,
    progress: bool = True,
    layout: Layout = FREE,
    text: SignText = DEFAULT_TEXT,
    mixture: dict[str, float] = PRETRAIN_MIXTURE,
) -> WorldDataset:
    """Render ``n`` random training scenes (train combinations only) with their captions, the
    families in proportion to ``mixture`` (``base.mixture``); ``layout`` places objects on a
    grid and sign text (``world.layout_*``, ``world.text_layout``), ``text`` is what signs say."""
    rng = np.random.default_rng(seed)
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    captions, tags, records, boxes = [], [], [], []
    for i in tqdm(range(n), desc="rendering world", disable=not progress, leave=False):
        scene, caption, metadata = sample_training_scene(rng, image_size, layout, text, mixture)
        images[i] = torch.from_numpy(np.array(render_scene(scene), dtype=np.uint8)).permute(2, 0, 1)
        captions.append(caption)
        tags.append(metadata["tag"])
        records.append(metadata)
        boxes.append(scene_boxes(scene))
    return WorldDataset(images, captions, tags, records, boxes)


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``floor`` of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def foreground_weights(images: torch.Tensor, extra: float) -> torch.Tensor:
    """(B, 1, H, W) per-pixel weights of (B, 3, H, W) images in [0, 1]: 1 on the world's grey
    background, 1 + ``extra`` where any channel is off it by more than 6/255 (objects, signs and
    their anti-aliased edges)."""
    background = torch.tensor(BACKGROUND_RGB, dtype=images.dtype, device=images.device).view(1, 3, 1, 1) / 255
    off = (images - background).abs().amax(dim=1, keepdim=True) > 6 / 255
    return 1 + extra * off.to(images.dtype)


def vae_loss(
    vae: AutoencoderKL, images: torch.Tensor, kl_weight: float, foreground_weight: float = 0.0
) -> tuple[torch.Tensor, float]:
    """Reconstruction of (B, 3, H, W) images in [0, 1] plus a small KL; returns (loss, mse).

    With ``foreground_weight`` > 0 the squared error is averaged with ``foreground_weights``:
    objects cover a few percent of a scene, so plain MSE lets the VAE trade their colours for
    the background (red decoded as orange, method §0)."""
    target = images * 2 - 1
    posterior = vae.encode(target).latent_dist
    recon = vae.decode(posterior.sample()).sample
    mse = F.mse_loss(recon, target)
    reconstruction = mse
    if foreground_weight > 0:
        weights = foreground_weights(images, foreground_weight)
        reconstruction = ((recon - target) ** 2 * weights).sum() / (weights.sum() * target.shape[1])
    return reconstruction + kl_weight * posterior.kl().mean(), mse.item()


def train_vae(
    vae: AutoencoderKL,
    data: WorldDataset,
    cfg: BaseConfig,
    generator: torch.Generator,
    ckpt_path: Path,
    on_metrics: MetricsCallback | None = None,
) -> None:
    """Phase 1: fit the VAE, checkpointing every ``cfg.checkpoint_every`` steps."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    start = checkpoint.resume_progress(ckpt_path, generator, vae=vae, optimizer=optimizer)
    vae.train()
    bar = tqdm(range(start, cfg.vae_steps), desc="base: VAE", initial=start, total=cfg.vae_steps)
    for step in bar:
        index = torch.randint(len(data.captions), (cfg.vae_batch_size,), generator=generator)
        images, _ = data.batch(index)
        for group in optimizer.param_groups:
            group["lr"] = cfg.vae_lr * lr_factor(step, cfg.vae_steps, cfg.warmup_steps)
        loss, mse = vae_loss(vae, images, cfg.vae_kl_weight, cfg.vae_foreground_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(mse=f"{mse:.4f}")
        if on_metrics and (step % 50 == 0 or step == cfg.vae_steps - 1):
            on_metrics("vae", {"vae_mse": mse}, step)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            checkpoint.save_progress(ckpt_path, step + 1, generator, vae=vae, optimizer=optimizer)
    vae.eval()


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, data: WorldDataset, batch_size: int = 256) -> torch.Tensor:
    """The normalised latent means (N, C, h, w) of every image of ``data``."""
    return torch.cat([
        latents_from_images(vae, data.images[i : i + batch_size].float() / 255)
        for i in range(0, len(data.captions), batch_size)
    ])


@torch.no_grad()
def calibrate_latents(vae: AutoencoderKL, data: WorldDataset) -> torch.Tensor:
    """Set SD3's shift_factor/scaling_factor so latents have mean 0, std 1; returns all
    normalised latent means, (N, C, h, w)."""
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    raw = encode_dataset(vae, data)
    shift, std = raw.mean().item(), raw.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / std)
    return (raw - shift) / std


def shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift s = k u / (1 + (k − 1) u): the same map the sampler's schedule uses."""
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    pooled: torch.Tensor,
    generator: torch.Generator,
    shift: float = 1.0,
) -> torch.Tensor:
    """Rectified flow (docs/method.md §0): x_s = (1 − s) x_0 + s ε, target v = ε − x_0, with
    s the shifted logit-normal sigma (without the shift, s > 0.9 is drawn 1.4 % of the time and
    the model never learns the high-noise steps that lay out the image).

    latents: (B, C, h, w) clean normalised latents; embeds: (B, L, D); pooled: (B, P).
    """
    batch = latents.shape[0]
    sigma = shifted_sigmas(torch.sigmoid(torch.randn(batch, generator=generator)), shift)
    noise = torch.randn(latents.shape, generator=generator)
    s = sigma.view(-1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    pred = transformer(
        hidden_states=noisy,
        encoder_hidden_states=embeds,
        pooled_projections=pooled,
        timestep=sigma * 1000,
        return_dict=False,
    )[0]
    return F.mse_loss(pred, noise - latents)


class CaptionEmbeddings:
    """The frozen text encoders' output for every distinct caption, computed once: the training
    loop indexes it instead of re-encoding each batch (about a tenth of a step's time).

    embeds: (U, L, D); pooled: (U, P) for U distinct captions; row 0 is the empty caption.
    """

    def __init__(self, pipe: StableDiffusion3Pipeline, captions: list[str], batch_size: int = 256) -> None:
        distinct = list(dict.fromkeys(["", *captions]))
        self.row = {caption: i for i, caption in enumerate(distinct)}
        with torch.no_grad():
            parts = [encode_prompts(pipe, distinct[i : i + batch_size]) for i in range(0, len(distinct), batch_size)]
        self.embeds = torch.cat([e for e, _ in parts])
        self.pooled = torch.cat([p for _, p in parts])

    def lookup(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) embeddings and (B, P) pooled vectors of ``captions`` (all seen at init)."""
        rows = torch.tensor([self.row[c] for c in captions])
        return self.embeds[rows], self.pooled[rows]


def _drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    keep = torch.rand(len(captions), generator=generator) >= p
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


def phase_lr_factor(step: int, cfg: BaseConfig, two_phases: bool) -> float:
    """``lr_factor`` over the whole run, or, with a low-resolution phase, one warm-up and
    cosine per phase: the full-size phase adapts at the peak rate, not at the tail of one decay."""
    floor = cfg.final_lr_fraction
    if not two_phases or cfg.low_res_steps == 0:
        return lr_factor(step, cfg.steps, cfg.warmup_steps, floor)
    if step < cfg.low_res_steps:
        return lr_factor(step, cfg.low_res_steps, cfg.warmup_steps, floor)
    return lr_factor(step - cfg.low_res_steps, cfg.steps - cfg.low_res_steps, cfg.warmup_steps, floor)


def trains_low_res(step: int, cfg: BaseConfig) -> bool:
    """Whether transformer step ``step`` draws its batch from the low-resolution set: every step
    of the first ``cfg.low_res_steps``, then every ``cfg.low_res_interleave``-th one (method §0:
    the cheap dense scenes keep training the binding while the full-size phase letters signs)."""
    if step < cfg.low_res_steps:
        return True
    every = cfg.low_res_interleave
    return every > 0 and (step - cfg.low_res_steps) % every == every - 1


@dataclass
class LatentSet:
    """Clean normalised latents (N, C, h, w) of rendered scenes at one resolution, their N
    captions and, when the grounding loss is on, their grounding targets."""

    latents: torch.Tensor
    captions: list[str]
    grounding: GroundingTargets | None = None


def latent_set(pipe: StableDiffusion3Pipeline, latents: torch.Tensor, data: WorldDataset, grounded: bool) -> LatentSet:
    """``data``'s latents with its captions and, if ``grounded``, its grounding targets on the
    transformer's token grid."""
    if not grounded:
        return LatentSet(latents, data.captions)
    grid = latents.shape[-1] // pipe.transformer.config.patch_size
    targets = grounding_targets(pipe, data.captions, data.records, data.boxes, data.images.shape[-1], grid)
    return LatentSet(latents, data.captions, targets)


def trained_modules(pipe: StableDiffusion3Pipeline, text_encoders: bool) -> torch.nn.ModuleDict:
    """The modules base pretraining optimises: the transformer, and the three text encoders when
    ``base.train_text_encoders`` (method §0); the others are frozen here."""
    encoders = {"text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2,
                "text_encoder_3": pipe.text_encoder_3}
    for encoder in encoders.values():
        encoder.requires_grad_(text_encoders)
        encoder.eval()
    pipe.transformer.requires_grad_(True)  # a phase that follows another finds it frozen
    return torch.nn.ModuleDict({"transformer": pipe.transformer, **(encoders if text_encoders else {})})


def grounded_loss(
    transformer: torch.nn.Module,
    capture: AttentionCapture,
    stage: LatentSet,
    index: torch.Tensor,
    captions: list[str],
    embeds: torch.Tensor,
    pooled: torch.Tensor,
    generator: torch.Generator,
    shift: float,
    weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The flow-matching loss plus ``weight`` × the grounding loss of the same forward pass
    (method §0, Grounding), and the two terms for logging. A dropped caption has no core tokens.

    index: (B,) rows of ``stage``; captions: the B captions after caption dropout."""
    assert stage.grounding is not None
    kept = torch.tensor([bool(caption) for caption in captions], dtype=torch.float32)[:, None]
    with capture.recording(stage.grounding.core[index] * kept):
        flow = flow_matching_loss(transformer, stage.latents[index], embeds, pooled, generator, shift)
    grounding, share = grounding_loss(capture.result(), stage.grounding.objects[index])
    terms = {"fm_loss": flow.item(), "grounding_loss": grounding.item(), "grounding_share": share.item()}
    return flow + weight * grounding, terms


def train_transformer(
    pipe: StableDiffusion3Pipeline,
    data: LatentSet,
    cfg: BaseConfig,
    generator: torch.Generator,
    ckpt_path: Path,
    on_metrics: MetricsCallback | None = None,
    low_res: LatentSet | None = None,
    phase: str = "transformer",
) -> None:
    """Phase 2: flow matching on precomputed latents; the first ``cfg.low_res_steps`` steps on
    the ``low_res`` set (fewer tokens, as SD3 pretrains at a lower resolution first), the rest
    on ``data``, but for every ``cfg.low_res_interleave``-th one (``trains_low_res``), plus
    ``cfg.grounding_weight`` × the grounding loss when ``data`` carries grounding targets.
    Leaves the EMA weights in ``pipe.transformer``; ``phase`` names it in logs and metrics."""
    transformer = pipe.transformer
    shift = pipe.scheduler.config.shift
    trained = trained_modules(pipe, cfg.train_text_encoders)
    trained.train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(trained, cfg.ema_decay)
    captions = data.captions + (low_res.captions if low_res else [])
    text = None if cfg.train_text_encoders else CaptionEmbeddings(pipe, captions)
    start = checkpoint.resume_progress(ckpt_path, generator, transformer=trained, optimizer=optimizer, ema=ema)
    grounded = cfg.grounding_weight > 0 and data.grounding is not None
    capture = AttentionCapture(transformer, differentiable=True) if grounded else None
    bar = tqdm(range(start, cfg.steps), desc=f"base: {phase}", initial=start, total=cfg.steps)
    for step in bar:
        stage = low_res if low_res is not None and trains_low_res(step, cfg) else data
        index = torch.randint(len(stage.captions), (cfg.batch_size,), generator=generator)
        batch_captions = _drop_captions([stage.captions[i] for i in index.tolist()], cfg.caption_dropout, generator)
        embeds, pooled = text.lookup(batch_captions) if text else encode_prompts(pipe, batch_captions, grad=True)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * phase_lr_factor(step, cfg, low_res is not None)
        grounding: dict[str, float] = {}
        if capture is None:
            loss = flow_matching_loss(transformer, stage.latents[index], embeds, pooled, generator, shift)
        else:
            loss, grounding = grounded_loss(transformer, capture, stage, index, batch_captions, embeds, pooled,
                                            generator, shift, cfg.grounding_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.grad_clip)
        optimizer.step()
        ema.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if on_metrics and (step % 50 == 0 or step == cfg.steps - 1):
            on_metrics(phase, {"fm_loss": loss.item(), "grad_norm": grad_norm.item(), **grounding}, step)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint.save_progress(
                ckpt_path, step + 1, generator, transformer=trained, optimizer=optimizer, ema=ema
            )
    ema.copy_to()
    if capture is not None:
        capture.remove()
    trained.eval()
    trained.requires_grad_(False)


def phase_mixtures(cfg: BaseConfig) -> tuple[dict[str, float], dict[str, float]]:
    """The family mixtures of the (low-resolution, full-size) training sets: the full-size set may
    weigh them differently (``base.full_size_mixture``: more signs, whose characters bind to
    their slots in sign-rich batches, method §0)."""
    return cfg.mixture, cfg.full_size_mixture or cfg.mixture


def low_res_latents(pipe: StableDiffusion3Pipeline, small: WorldDataset, signs: bool, grounded: bool) -> LatentSet:
    """The low-resolution phase's training set: ``small``'s latents, without its signs unless
    ``signs`` (``base.low_res_signs``: the VAE learns strokes from them, but they are free signs,
    not the full size's `cells` ones the transformer must learn to letter, method §0)."""
    if not signs:  # a copy of the images only when something is left out
        small = small.subset([i for i, tag in enumerate(small.tags) if tag != "ocr"])
    return latent_set(pipe, encode_dataset(pipe.vae, small), small, grounded)


def pretrain_base(
    cfg: Config, work_dir: Path, on_metrics: MetricsCallback | None = None
) -> StableDiffusion3Pipeline:
    """Build the miniature SD3, pretrain VAE then transformer on world images, and return it.

    Resumes from the checkpoints in ``work_dir`` when a previous run was interrupted.
    """
    if cfg.model.source != "embedded":
        raise ValueError(
            f"base pretraining builds the embedded miniature SD3; model.source is {cfg.model.source!r} "
            "(a pretrained model needs no base stage: point model.pretrained at it)"
        )
    generator = checkpoint.seed_everything(cfg.seed)
    pipe = build_mini_sd3(
        cfg.model.mini, vocabulary(), TEXT_CHARSET, cfg.world.image_size, seed=cfg.seed
    )
    text = world_text(cfg.world)
    mixture, full_size_mixture = phase_mixtures(cfg.base)
    data = render_world_dataset(
        cfg.base.dataset_size, cfg.world.image_size, seed=cfg.seed, layout=world_layout(cfg.world),
        text=text, mixture=full_size_mixture,
    )
    small = None
    if cfg.base.low_res_size:
        # the same world at a lower resolution, objects one per token as at full size
        # (with `cells` signs its signs are free ones: `cells` do not fit 4x4 tokens, and the VAE
        # learns strokes from them; leaving them out blurs the base's text, docs/method.md §0)
        small = render_world_dataset(
            cfg.base.dataset_size, cfg.base.low_res_size, seed=cfg.seed + 1, layout=Layout(cfg.world.layout_cell),
            text=text, mixture=mixture,
        )
    # The convolutional VAE learns the objects' appearance where they are dense: on the small
    # images when there are some (4x fewer pixels per object; sparse full-size images, or crops
    # of them, left halos around objects), and applies to any size.
    train_vae(pipe.vae, small or data, cfg.base, generator, work_dir / "vae.ckpt", on_metrics)
    pipe.vae.requires_grad_(False)
    grounded = cfg.base.grounding_from_start and cfg.base.grounding_weight > 0
    latents = latent_set(pipe, calibrate_latents(pipe.vae, data), data, grounded)
    low_res = low_res_latents(pipe, small, cfg.base.low_res_signs, grounded) if small is not None else None
    train_transformer(pipe, latents, cfg.base, generator, work_dir / "transformer.ckpt", on_metrics, low_res)
    if cfg.base.grounding_steps:
        ground_base(pipe, cfg, work_dir / "grounding.ckpt", on_metrics)
    return pipe


def grounding_schedule(cfg: BaseConfig) -> BaseConfig:
    """The grounding phase's schedule: ``grounding_steps`` full-size steps at ``grounding_lr``,
    warmed up over a tenth of them (at most 20), with the loss at ``grounding_weight``."""
    return cfg.model_copy(update={"steps": cfg.grounding_steps, "low_res_steps": 0, "low_res_interleave": 0,
                                  "lr": cfg.grounding_lr, "warmup_steps": min(20, cfg.grounding_steps // 10)})


def ground_base(pipe: StableDiffusion3Pipeline, cfg: Config, ckpt_path: Path,
                on_metrics: MetricsCallback | None = None) -> None:
    """The grounding phase (method §0, Grounding): fine-tune the pretrained pipeline in place on
    ``base.grounding_images`` freshly rendered full-size images with flow matching plus
    ``base.grounding_weight`` × the grounding loss, from a fresh optimiser and EMA. It seeds its
    own generator, so a saved base fine-tuned by it equals a base pretrained with it, bit for bit.
    Resumes from ``ckpt_path``."""
    generator = checkpoint.seed_everything(cfg.seed + 2)
    data = render_world_dataset(
        cfg.base.grounding_images, cfg.world.image_size, seed=cfg.seed + 2, layout=world_layout(cfg.world),
        text=world_text(cfg.world), mixture=phase_mixtures(cfg.base)[1],
    )
    latents = latent_set(pipe, encode_dataset(pipe.vae, data), data, grounded=cfg.base.grounding_weight > 0)
    train_transformer(pipe, latents, grounding_schedule(cfg.base), generator, ckpt_path, on_metrics, phase="grounding")
