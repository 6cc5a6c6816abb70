"""Trainable parameters of the policy: LoRA adapters through peft, or the full transformer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

ADAPTER = "star"


def add_lora(transformer: torch.nn.Module, rank: int, alpha: int, targets: list[str], seed: int) -> None:
    """Attach a LoRA adapter (Gaussian A, zero B: the policy starts exactly at the base model)."""
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian")
    transformer.add_adapter(config, adapter_name=ADAPTER)
    transformer.set_adapter(ADAPTER)


def has_lora(transformer: torch.nn.Module) -> bool:
    return bool(getattr(transformer, "peft_config", None))


@contextmanager
def reference_policy(transformer: torch.nn.Module) -> Iterator[None]:
    """The base weights (adapters disabled) inside the block; the policy again after it."""
    transformer.disable_adapters()
    try:
        yield
    finally:
        transformer.enable_adapters()


def trainable_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold: the adapter weights, or every weight when fully fine-tuned."""
    if has_lora(transformer):
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(transformer, adapter_name=ADAPTER).items()}
    return {k: v.detach().clone() for k, v in transformer.state_dict().items()}


def load_trainable_state(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    if has_lora(transformer):
        result = set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise KeyError(f"checkpoint holds adapter weights this model lacks: {unexpected[:3]}")
    else:
        transformer.load_state_dict(state)
