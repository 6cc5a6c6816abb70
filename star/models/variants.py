"""Trained variants on disk: the base model plus diffusers-format LoRA weights (or a full
transformer), loadable by anyone with ``pipe.load_lora_weights(path)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from peft.utils import get_peft_model_state_dict

from star.files import atomic_directory, write_bytes
from star.models.lora import ADAPTER, has_lora

LORA_FILE = "pytorch_lora_weights.safetensors"
INFO_FILE = "variant.json"


def save_variant(pipe: StableDiffusion3Pipeline, out_dir: Path, info: dict[str, Any]) -> Path:
    """Write the trained transformer of ``pipe`` (adapter or full weights) and ``info`` to
    ``out_dir``, atomically: a failed write raises ``star.files.WriteError`` naming ``out_dir``
    and its cause, and keeps a variant saved there before."""
    atomic_directory(out_dir, lambda staging: _write_variant(pipe, staging, info))
    return out_dir


def _write_variant(pipe: StableDiffusion3Pipeline, out_dir: Path, info: dict[str, Any]) -> None:
    """``save_variant``'s files, written into the (staging) folder ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    transformer = pipe.transformer
    if has_lora(transformer):
        config = transformer.peft_config[ADAPTER]
        metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules)}
        StableDiffusion3Pipeline.save_lora_weights(
            out_dir, transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER),
            transformer_lora_adapter_metadata=metadata,
        )
        sort_safetensors_metadata(out_dir / LORA_FILE)
    else:
        transformer.save_pretrained(out_dir / "transformer")
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))


def sort_safetensors_metadata(path: Path) -> None:
    """Rewrite the header of a safetensors file with its metadata keys sorted.

    safetensors serialises ``__metadata__`` from a Rust HashMap whose order changes from process
    to process, so two identical trainings wrote different bytes and DVC saw a changed output.
    """
    raw = path.read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format keeps the tensor data 8-byte aligned
    write_bytes(path, len(text).to_bytes(8, "little") + text + raw[8 + header_size :])


def load_variant(pipe: StableDiffusion3Pipeline, variant_dir: Path) -> StableDiffusion3Pipeline:
    """Apply a saved variant to a freshly loaded base ``pipe`` (LoRA fused for speed)."""
    if (variant_dir / LORA_FILE).is_file():
        pipe.load_lora_weights(variant_dir, adapter_name=ADAPTER)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    elif (variant_dir / "transformer").is_dir():
        dtype = pipe.transformer.dtype
        pipe.transformer = SD3Transformer2DModel.from_pretrained(variant_dir / "transformer", torch_dtype=dtype)
        pipe.transformer.to(pipe.vae.device).eval()
    else:
        raise FileNotFoundError(f"{variant_dir} holds neither {LORA_FILE} nor transformer/: not a trained variant")
    return pipe


def variant_info(variant_dir: Path) -> dict[str, Any]:
    path = variant_dir / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def transformer_weights(pipe: StableDiffusion3Pipeline) -> dict[str, torch.Tensor]:
    """A detached copy of every transformer weight (tests compare variants with it)."""
    return {k: v.detach().clone() for k, v in pipe.transformer.state_dict().items()}
