"""PickScore reward: a CLIP model's scaled image-text similarity, through one loading path.

The real PickScore (``yuvalkirstain/PickScore_v1`` with the processor of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``) and the embedded world CLIP stand-in
(``star/world/clip.py``, saved with ``save_pretrained``) are both loaded by
``CLIPModel.from_pretrained`` / ``AutoProcessor.from_pretrained``, by hub id or local path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel

from rewards.base import check_batch, to_uint8_arrays
from rewards.hub import load_pretrained


class PickScoreReward:
    """``score`` = ``logit_scale.exp() * cos(image_embedding, text_embedding)`` per image.

    These are PickScore's published units (the paper's numbers, e.g. 23.31 for a model, are
    ``exp(logit_scale) ≈ 100`` times a cosine). The model and processor load lazily on the first
    call; images are preprocessed by the processor's PIL backend (torchvision is not needed, and
    PIL's bicubic resize is the one PickScore's own numbers were computed with).
    """

    name = "pickscore"

    def __init__(
        self, model: str | Path, processor: str | Path, device: str = "cpu", batch_size: int = 32,
        missing_hint: str | None = None,
    ) -> None:
        """``missing_hint``: what to do when the weights are not found (default: point the
        ``rewards.pickscore_*`` keys at a local copy)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name, self.processor_name = str(model), str(processor)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.missing_hint = missing_hint
        self._model: CLIPModel | None = None
        self._processor: Any = None

    def _load(self) -> tuple[CLIPModel, Any]:
        if self._model is None:
            self._processor = load_pretrained(
                AutoProcessor.from_pretrained, self.processor_name, "PickScore processor",
                hint=self.missing_hint or "point rewards.pickscore_processor at a local copy", backend="pil",
            )
            model = load_pretrained(CLIPModel.from_pretrained, self.model_name, "PickScore model",
                                    hint=self.missing_hint or "point rewards.pickscore_model at a local copy")
            self._model = model.eval().requires_grad_(False).to(self.device)
        return self._model, self._processor

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the loaded model (≈ 100 for PickScore)."""
        return self._load()[0].logit_scale.exp().item()

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, D) unit-norm embeddings (on ``device``)."""
        model, processor = self._load()
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pil = [Image.fromarray(a) for a in to_uint8_arrays(images[start : start + self.batch_size])]
            pixels = processor.image_processor(images=pil, return_tensors="pt")["pixel_values"]
            chunks.append(_features(model.get_image_features(pixel_values=pixels.to(self.device, model.dtype))))
        return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, D) unit-norm embeddings (on ``device``); long prompts are truncated
        to the text tower's positions (77 for PickScore)."""
        model, processor = self._load()
        max_length = model.config.text_config.max_position_embeddings
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = processor.tokenizer(
                prompts[start : start + self.batch_size], padding=True, truncation=True,
                max_length=max_length, return_tensors="pt",
            )
            chunks.append(_features(model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )))
        return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] and B prompts -> (B,) float32 PickScores on the CPU."""
        check_batch(images, prompts, metadata)
        if len(images) == 0:
            return torch.empty(0)
        cosine = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)
        return (self.logit_scale * cosine).cpu()


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features``: a tensor in transformers 4, an output
    object with them in ``pooler_output`` in transformers 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output

