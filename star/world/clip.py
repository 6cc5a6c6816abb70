"""The embedded PickScore stand-in: a tiny ``CLIPModel`` trained contrastively on world images.

It is built from the real transformers classes (``CLIPModel``, a ``CLIPProcessor`` holding a
``CLIPImageProcessor`` at the world resolution and the world's WordPiece tokenizer), trained with
a symmetric InfoNCE loss on rendered images of TRAIN combinations only, saved with
``save_pretrained`` and read back by ``PickScoreReward(path, path)`` — the loading path of the
real PickScore. Its quality is the held-out image->text top-1 accuracy on captions of
combinations never seen in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig

from rewards.pickscore import PickScoreReward
from star.config import WorldClipConfig
from star.models.sd3 import BOS, EOS, PAD, SPECIAL_TOKENS, build_world_tokenizer
from star.rl import checkpoint
from star.world.pretrain import MetricsCallback, WorldDataset, lr_factor, render_world_dataset
from star.world.prompts import Metadata, combination_keys, generate_prompt_sets, render_records, vocabulary
from star.world.render import FREE, Layout
from star.world.vocab import TEXT_CHARSET

WORLD_CLIP_DIR = "world_clip"
"""Folder of the stand-in inside ``paths.reward_models`` (``star.scoring`` reads it there)."""
MAX_TOKENS = 32
"""Text positions; the longest world prompt is 16 tokens with BOS/EOS."""
MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP's clamp of the learnt temperature (PickScore sits at it)."""
WARMUP_FRACTION = 0.05
CAPTION_SHARE = 0.5
"""Share of the training set drawn from the caption family (the prompts PickScore scores, and
the sharpest supervision: every object's colour is named); the rest is the pretraining mixture,
so GenEval and OCR phrasings are met too."""


@dataclass
class WorldClip:
    """A trained world CLIP and its processor; ``save_pretrained`` writes both to one folder."""

    model: CLIPModel
    processor: CLIPProcessor

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)


def build_world_clip(cfg: WorldClipConfig, image_size: int, seed: int) -> WorldClip:
    """A freshly initialised (seeded) tiny CLIP over the world vocabulary at ``image_size``."""
    if image_size % cfg.patch_size:
        raise ValueError(
            f"world image_size {image_size} is not a multiple of rewards.world_clip.patch_size={cfg.patch_size}"
        )
    if cfg.width % cfg.heads:
        raise ValueError(f"rewards.world_clip.width={cfg.width} is not divisible by heads={cfg.heads}")
    tokenizer = build_world_tokenizer(vocabulary(), TEXT_CHARSET, MAX_TOKENS, kind="clip")
    tower = dict(hidden_size=cfg.width, intermediate_size=4 * cfg.width, num_hidden_layers=cfg.layers,
                 num_attention_heads=cfg.heads, projection_dim=cfg.projection_dim)
    text = CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_TOKENS, pad_token_id=SPECIAL_TOKENS.index(PAD),
        bos_token_id=SPECIAL_TOKENS.index(BOS), eos_token_id=SPECIAL_TOKENS.index(EOS), **tower,
    )
    vision = CLIPVisionConfig(image_size=image_size, patch_size=cfg.patch_size, **tower)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=cfg.projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    # crop = resize = world size: preprocessing of world images is rescale + normalise only
    side = {"height": image_size, "width": image_size}
    images = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=side)
    return WorldClip(model, CLIPProcessor(image_processor=images, tokenizer=tokenizer))


def _render(records: list[Metadata], image_size: int, rng: np.random.Generator, layout: Layout = FREE) -> torch.Tensor:
    """A ground-truth picture per record: (N, 3, H, W) uint8."""
    return torch.from_numpy(render_records(records, image_size, rng, layout)).permute(0, 3, 1, 2).contiguous()


def render_clip_dataset(n: int, image_size: int, seed: int, layout: Layout = FREE) -> WorldDataset:
    """``n`` (image, caption) pairs of train combinations only: ``CAPTION_SHARE`` of them distinct
    caption-family records, the rest the pretraining mixture; ``layout``: the world's object layout."""
    k = int(n * CAPTION_SHARE)
    mixture = render_world_dataset(n - k, image_size, seed=seed, layout=layout)
    records = generate_prompt_sets(seed, n_train=k, n_test=0)["pickscore"]["train"]
    images = _render(records, image_size, np.random.default_rng([seed, 4]), layout)
    return WorldDataset(torch.cat([mixture.images, images]), mixture.captions + [r["prompt"] for r in records],
                        mixture.tags + [r["tag"] for r in records])


def normalise(images: torch.Tensor, processor: CLIPProcessor) -> torch.Tensor:
    """(B, 3, H, W) uint8 world images -> pixel values as the processor makes them (same size:
    its resize and crop are identities), without a round trip through PIL."""
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def contrastive_loss(logits: torch.Tensor, caption_ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Symmetric InfoNCE of (B, B) image x text logits. Repeated captions in a batch ("a photo of
    a circle" in two colours) are all positives, not false negatives: targets spread over them.
    Returns (loss, in-batch image->text top-1 accuracy)."""
    positives = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    accuracy = positives.gather(1, logits.argmax(1, keepdim=True)).mean().item()
    return loss, accuracy


def _logits(model: CLIPModel, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, B) image x text logits: exp(logit_scale) * cosine."""
    width = int(mask.sum(1).max())  # pad to the batch's longest caption, not MAX_TOKENS
    out = model(input_ids=ids[:, :width], attention_mask=mask[:, :width], pixel_values=pixels)
    return out.logits_per_image


def train_world_clip(
    cfg: WorldClipConfig, image_size: int, seed: int, work_dir: Path,
    on_metrics: MetricsCallback | None = None, checkpoint_every: int = 250, layout: Layout = FREE,
) -> WorldClip:
    """Train the world CLIP on ``cfg.dataset_size`` rendered train-combination images.

    Deterministic in ``seed``; resumes from ``work_dir/world_clip.ckpt`` (written atomically
    every ``checkpoint_every`` steps) after an interruption. Warm-up, then cosine decay.
    """
    generator = checkpoint.seed_everything(seed)
    clip = build_world_clip(cfg, image_size, seed)
    model, ckpt_path = clip.model, Path(work_dir) / "world_clip.ckpt"
    data = render_clip_dataset(cfg.dataset_size, image_size, seed, layout)
    tokens = clip.processor.tokenizer(data.captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                      return_tensors="pt")
    caption_ids = torch.tensor(np.unique(data.captions, return_inverse=True)[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    start = checkpoint.resume_progress(ckpt_path, generator, model=model, optimizer=optimizer)
    model.train()
    bar = tqdm(range(start, cfg.steps), desc="reward_models: world CLIP", initial=start, total=cfg.steps)
    for step in bar:
        index = torch.randint(len(data.captions), (cfg.batch_size,), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.steps, max(1, int(WARMUP_FRACTION * cfg.steps)))
        logits = _logits(model, normalise(data.images[index], clip.processor), tokens["input_ids"][index],
                         tokens["attention_mask"][index])
        loss, accuracy = contrastive_loss(logits, caption_ids[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
        if on_metrics and (step % 50 == 0 or step == cfg.steps - 1):
            on_metrics("world_clip", {"loss": loss.item(), "batch_top1": accuracy,
                                      "logit_scale": model.logit_scale.exp().item()}, step)
        if (step + 1) % checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint.save_progress(ckpt_path, step + 1, generator, model=model, optimizer=optimizer)
    model.eval()
    return clip


def heldout_set(n: int, image_size: int, seed: int, layout: Layout = FREE) -> tuple[torch.Tensor, list[str], list[str]]:
    """``n`` caption prompts of the world's test split (every one shows a combination unseen in
    training), rendered: (n, 3, H, W) float images in [0, 1], the n distinct captions and their
    content keys ("a red circle" and "a drawing of a red circle" share one; so do mirrored
    relations)."""
    records = generate_prompt_sets(seed, n_train=0, n_test=n)["pickscore"]["test"]
    images = _render(records, image_size, np.random.default_rng([seed, 3]), layout).float() / 255
    return images, [r["prompt"] for r in records], [combination_keys(r)[0] for r in records]


def heldout_accuracy(
    reward: PickScoreReward, images: torch.Tensor, captions: list[str], keys: list[str], batch: int = 32
) -> float:
    """Image->text top-1 accuracy among each consecutive ``batch`` of (image, caption) pairs,
    scored through ``reward``'s embeddings; picking a caption with the same content key (another
    wording of the same scene) counts as correct. images: (N, 3, H, W) in [0, 1]."""
    image_emb, text_emb = reward.image_embeddings(images), reward.text_embeddings(captions)
    correct = 0
    for start in range(0, len(captions), batch):
        picked = (image_emb[start : start + batch] @ text_emb[start : start + batch].t()).argmax(1)
        chunk = keys[start : start + batch]
        correct += sum(chunk[int(p)] == k for p, k in zip(picked, chunk))
    return correct / len(captions)
