"""GenEval's real detector: Mask2Former instance segmentation plus CLIP zero-shot colours.

Mirrors the official pipeline (djghosh13/geneval ``evaluation/evaluate_images.py`` with its
mmdet config ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`` and open_clip ViT-L-14) on
transformers models, e.g. ``facebook/mask2former-swin-small-coco-instance`` and
``openai/clip-vit-large-patch14``:

- images are resized as mmdet's test pipeline does (keep ratio into 1333x800, bilinear without
  antialiasing, rounded to uint8 levels), normalised, zero-padded to a multiple of 32;
- mask logits are upsampled to the padded size, cropped to the valid region and upsampled to
  the original size (mmdet's ``simple_test``); the top ``max_per_image`` (query, class) pairs get
  score = class probability x mean sigmoid inside the binary mask, and box = the mask's extent
  (mmdet's ``instance_postprocess`` and ``mask2bbox``; the processor's
  ``post_process_instance_segmentation`` is not used: it resizes through a fixed 384x384 and
  ignores the padding);
- colour: the image with pixels outside the mask set to GenEval's background ``#999`` (153,
  not 127/128), cropped to the box, CLIP-preprocessed (short side resize, centre crop), then
  classified among the ten colours by averaging the three official prompt templates.

Detections scoring at most ``min_score`` (default: the rules' 0.3) are dropped: the rules count
only scores strictly above 0.3 (0.9 for counting), so the default loses nothing they could use.
Image preprocessing is done here with torch and PIL (the stock fast processors need
torchvision); the processors are loaded only for their configuration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rewards.detection import Detection
from rewards.geneval_rules import COLORS, THRESHOLD
from rewards.hub import load_pretrained as load_from_hub

COLOR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {color} {object}",
    "a photo of a {color}-colored {object}",
    "a photo of a {color} object",
)
"""GenEval's colour prompts; a class's colour embedding is the mean over these."""
BACKGROUND: int = 153
"""GenEval's crop background, ``#999``, on every channel."""
MMDET_SCALE: tuple[int, int] = (800, 1333)
"""(short, long) edge bound of mmdet's Mask2Former COCO test pipeline."""
MAX_PER_IMAGE: int = 100
"""(query, class) pairs kept per image before scoring, as mmdet's ``max_per_image``."""
CROP_CHUNK: int = 64
"""Colour crops encoded by CLIP per forward pass."""

Instance = tuple[int, float, torch.Tensor]
"""(label id, score, boolean mask (H, W)) of one segmented instance."""


def load_pretrained(cls: Any, name: str, what: str) -> Any:
    """``cls.from_pretrained(name)``, turning a missing model into a ``ModelLoadError``."""
    return load_from_hub(cls.from_pretrained, name, f"{what} ({cls.__name__})")


def resized_shape(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmdet's keep-ratio size: the largest (h, w) with short <= scale[0] and long <= scale[1]."""
    factor = min(scale[1] / max(height, width), scale[0] / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def mask_to_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) enclosing a non-empty (H, W) boolean mask, x1/y1 exclusive (mmdet)."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(xs) == 0:
        raise ValueError("mask_to_box needs a non-empty mask")
    return float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)


def masked_crop(image: np.ndarray, mask: np.ndarray, box: Sequence[float], background: int = BACKGROUND) -> np.ndarray:
    """The box of ``image`` (H, W, 3) uint8 with pixels outside ``mask`` (H, W) set to grey
    ``background``; returns (y1 - y0, x1 - x0, 3) uint8 (integer box coordinates)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = image[y0:y1, x0:x1]
    return np.where(mask[y0:y1, x0:x1, None], crop, np.uint8(background)).astype(np.uint8)


def instances_from_logits(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    padded: tuple[int, int],
    valid: tuple[int, int],
    original: tuple[int, int],
    min_score: float,
    max_per_image: int = MAX_PER_IMAGE,
) -> list[Instance]:
    """One image's instances, best first, scoring strictly above ``min_score``.

    Args:
        class_logits: (Q, C + 1), the last class being "no object".
        mask_logits: (Q, h, w), covering the whole ``padded`` model input (H', W').
        valid: (h', w'), the unpadded part of the input (the resized image).
        original: (H, W), the image's own size, that of the returned masks.
    """
    probs = class_logits.float().softmax(-1)[:, :-1]
    classes = probs.shape[1]
    top, index = probs.flatten().topk(min(max_per_image, probs.numel()))
    # score = prob x mask score <= prob, so pairs at or below min_score never survive
    keep = top > min_score
    top, query, label = top[keep], index[keep] // classes, index[keep] % classes
    if len(top) == 0:
        return []
    logits = F.interpolate(mask_logits[query][None].float(), size=padded, mode="bilinear", align_corners=False)
    logits = logits[..., : valid[0], : valid[1]]
    logits = F.interpolate(logits, size=original, mode="bilinear", align_corners=False)[0]
    binary = logits > 0
    area = binary.flatten(1).sum(1)
    scores = top * (logits.sigmoid() * binary).flatten(1).sum(1) / (area + 1e-6)
    order = scores.argsort(descending=True, stable=True).tolist()
    return [(int(label[i]), float(scores[i]), binary[i]) for i in order if scores[i] > min_score and area[i] > 0]


class Mask2FormerColorDetector:
    """A GenEval ``Detector`` (``__call__``) with a batched ``detect_batch``; models load lazily.

    Args:
        model: Mask2Former instance-segmentation checkpoint (hub id or local path).
        color_model: CLIP checkpoint (hub id or local path) with its tokenizer and processor.
        device: torch device for both models.
        batch_size: images per Mask2Former forward pass (images of one size are batched
            together only, so results do not depend on the batching).
        min_score: detections scoring at most this are dropped (see the module docstring).
        scale: (short, long) bound of the input resize; None uses the processor's ``size``.
        background: grey level outside the mask in colour crops.
    """

    def __init__(
        self,
        model: str,
        color_model: str,
        device: str = "cpu",
        batch_size: int = 8,
        min_score: float = THRESHOLD,
        scale: tuple[int, int] | None = MMDET_SCALE,
        background: int = BACKGROUND,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= min_score < 1.0:
            raise ValueError(f"min_score must be in [0, 1), got {min_score}")
        self.model, self.color_model, self.device = str(model), str(color_model), torch.device(device)
        self.batch_size, self.min_score, self.scale, self.background = batch_size, min_score, scale, background
        self._segmenter: Any = None
        self._text_classifiers: dict[str, torch.Tensor] = {}

    def load(self) -> None:
        """Load both models and their processors' configurations (done on first use)."""
        if self._segmenter is not None:
            return
        from transformers import (
            AutoTokenizer,
            CLIPImageProcessorPil,
            CLIPModel,
            Mask2FormerForUniversalSegmentation,
            Mask2FormerImageProcessorPil,
        )

        segmenter = load_pretrained(Mask2FormerForUniversalSegmentation, self.model, "Mask2Former model")
        self._seg_processor = load_pretrained(Mask2FormerImageProcessorPil, self.model, "Mask2Former image processor")
        self._clip = load_pretrained(CLIPModel, self.color_model, "CLIP colour model").to(self.device).eval()
        self._tokenizer = load_pretrained(AutoTokenizer, self.color_model, "CLIP tokenizer")
        self._clip_processor = load_pretrained(CLIPImageProcessorPil, self.color_model, "CLIP image processor")
        self._segmenter = segmenter.to(self.device).eval()

    def __call__(self, image: np.ndarray) -> list[Detection]:
        """Detections in one (H, W, 3) uint8 image."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image for (H, W, 3) uint8 images (sizes may differ)."""
        for index, image in enumerate(images):
            shape, dtype = getattr(image, "shape", type(image).__name__), getattr(image, "dtype", None)
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or dtype != np.uint8:
                raise ValueError(f"images[{index}] must be an (H, W, 3) uint8 array, got {shape} {dtype}")
        self.load()
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_shape[image.shape].append(index)
        results: list[list[Detection]] = [[] for _ in images]
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for index, detections in zip(chunk, self._detect_same_size([images[i] for i in chunk])):
                    results[index] = detections
        return results

    @torch.inference_mode()
    def _detect_same_size(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Detections for B images (H, W, 3) of one size, in one Mask2Former forward pass."""
        pixels, valid = self._preprocess(np.stack(images))
        outputs = self._segmenter(pixel_values=pixels)
        padded, original = tuple(pixels.shape[-2:]), images[0].shape[:2]
        id2label = self._segmenter.config.id2label
        found = []  # (image index, class name, score, mask (H, W), box)
        for index, (classes, masks) in enumerate(zip(outputs.class_queries_logits, outputs.masks_queries_logits)):
            for label, score, mask in instances_from_logits(classes, masks, padded, valid, original, self.min_score):
                mask = mask.cpu().numpy()
                found.append((index, id2label[label], score, mask, mask_to_box(mask)))
        crops = [(masked_crop(images[i], mask, box, self.background), name) for i, name, _, mask, box in found]
        results: list[list[Detection]] = [[] for _ in images]
        for (index, name, score, mask, box), color in zip(found, self._classify_colors(crops)):
            results[index].append(Detection(class_name=name, box=box, score=score, color=color, mask=mask))
        return results

    def _preprocess(self, images: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, H, W, 3) uint8 -> normalised, zero-padded pixels (B, 3, H', W') and the valid
        (unpadded) size; resized as mmdet does (bilinear, no antialias, uint8 levels)."""
        config = self._seg_processor
        height, width = images.shape[1:3]
        scale = self.scale or (config.size.shortest_edge, config.size.longest_edge or 10**9)
        if scale[0] is None:
            raise ValueError(f"pass scale=(short, long): the processor of {self.model!r} has size {config.size}")
        size = resized_shape(height, width, scale)
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).round().clamp(0, 255) / 255
        mean = torch.tensor(config.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(config.image_std, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        divisor = config.size_divisor or 32
        pad_h, pad_w = (-size[0]) % divisor, (-size[1]) % divisor
        return F.pad(x, (0, pad_w, 0, pad_h)), size

    @torch.inference_mode()
    def _classify_colors(self, crops: list[tuple[np.ndarray, str]]) -> list[str]:
        """The GenEval colour of each (crop (h, w, 3) uint8, class name)."""
        if not crops:
            return []
        features = []
        for start in range(0, len(crops), CROP_CHUNK):
            pixels = torch.stack([self._clip_pixels(crop) for crop, _ in crops[start : start + CROP_CHUNK]])
            output = self._clip.get_image_features(pixel_values=pixels.to(self.device))
            features.append(F.normalize(_features(output), dim=-1))
        image_features = torch.cat(features)
        return [
            COLORS[int((self._text_classifier(name) @ feature).argmax())]
            for feature, (_, name) in zip(image_features, crops)
        ]

    def _clip_pixels(self, crop: np.ndarray) -> torch.Tensor:
        """One crop as CLIP input (3, h, w): short side resized, centre-cropped, normalised
        (open_clip's / CLIPImageProcessor's transform)."""
        config = self._clip_processor
        short = config.size.shortest_edge or min(config.size.height, config.size.width)
        crop_h, crop_w = config.crop_size.height, config.crop_size.width
        height, width = crop.shape[:2]
        factor = short / min(height, width)
        new_w, new_h = (short, int(height * factor)) if width <= height else (int(width * factor), short)
        image = Image.fromarray(crop).resize((new_w, new_h), Image.Resampling(int(config.resample)))
        top, left = int(round((new_h - crop_h) / 2)), int(round((new_w - crop_w) / 2))
        image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        mean = torch.tensor(config.image_mean).view(3, 1, 1)
        return (pixels - mean) / torch.tensor(config.image_std).view(3, 1, 1)

    @torch.inference_mode()
    def _text_classifier(self, class_name: str) -> torch.Tensor:
        """(10, D) unit colour embeddings for ``class_name``: per colour, the renormalised mean
        of the templates' unit text embeddings (clip_benchmark's zero-shot classifier)."""
        if class_name not in self._text_classifiers:
            prompts = [t.format(color=c, object=class_name) for c in COLORS for t in COLOR_TEMPLATES]
            tokens = self._tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
            text = F.normalize(_features(self._clip.get_text_features(**tokens)), dim=-1)
            per_color = text.view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(1)
            self._text_classifiers[class_name] = F.normalize(per_color, dim=-1)
        return self._text_classifiers[class_name]


def _features(output: Any) -> torch.Tensor:
    """Projected CLIP features (N, D): transformers 5 wraps them in ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def mask2former_detector(
    model: str, color_model: str, device: str = "cpu", batch_size: int = 8
) -> Mask2FormerColorDetector:
    """GenEval's Mask2Former + CLIP ``Detector`` (lazy; see ``Mask2FormerColorDetector``)."""
    return Mask2FormerColorDetector(model, color_model, device=device, batch_size=batch_size)
