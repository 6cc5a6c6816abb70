"""Attention capture: the model's own image→text attention on the prompt's core tokens
(docs/method.md §3.2).

``CaptureJointAttnProcessor`` computes SD3's joint attention exactly as diffusers'
``JointAttnProcessor2_0`` does (the fused ``scaled_dot_product_attention`` stays fused) and,
only while an ``AttentionCapture`` is recording, also the small (image queries × text keys)
product of the tensors the block already built: softmax over the text keys alone, probability
summed over the core positions, averaged over heads. ``AttentionCapture`` installs it in the
chosen blocks and averages over them, giving one map per image on the latent patch grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


def _heads(x: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """(B, N, heads·d) -> (B, heads, N, d)."""
    return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)


def _project(
    states: torch.Tensor,
    batch: int,
    heads: int,
    projections: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module],
    norm_q: torch.nn.Module | None,
    norm_k: torch.nn.Module | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key, value (B, heads, N, d) of (B, N, D) ``states``, with the block's q/k norms."""
    query, key, value = (_heads(project(states), batch, heads) for project in projections)
    return (norm_q(query) if norm_q is not None else query), (norm_k(key) if norm_k is not None else key), value


class CaptureJointAttnProcessor:
    """SD3 joint attention (same arithmetic as ``JointAttnProcessor2_0``) that reports the
    image→text attention to ``capture`` while it records."""

    def __init__(self, capture: AttentionCapture) -> None:
        self.capture = capture

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch, image_tokens = hidden_states.shape[:2]
        query, key, value = _project(
            hidden_states, batch, attn.heads, (attn.to_q, attn.to_k, attn.to_v), attn.norm_q, attn.norm_k
        )
        if encoder_hidden_states is not None:
            text_query, text_key, text_value = _project(
                encoder_hidden_states, batch, attn.heads, (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj),
                attn.norm_added_q, attn.norm_added_k,
            )
            if self.capture.active:
                self.capture.add(query, text_key)
            query = torch.cat([query, text_query], dim=2)
            key = torch.cat([key, text_key], dim=2)
            value = torch.cat([value, text_value], dim=2)

        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1]).to(query.dtype)
        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](out))
        image_out, text_out = out[:, :image_tokens], out[:, image_tokens:]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return attn.to_out[1](attn.to_out[0](image_out)), text_out


def default_capture_blocks(num_blocks: int) -> list[int]:
    """The middle half of the joint blocks (method §3.2): e.g. 1..2 of 4, 6..17 of 24."""
    start = num_blocks // 4
    return list(range(start, max(start + 1, num_blocks - num_blocks // 4)))


class AttentionCapture:
    """Records A(p), the core-token attention mass of every image token, during a forward pass.

    Usage::

        capture = AttentionCapture(transformer, blocks)   # installs the processors
        with capture.recording(core_mask):                # core_mask: (B, L_text), 1 on core tokens
            transformer(...)
        maps = capture.result()                           # (B, N_image), averaged over blocks, heads

    Outside ``recording`` the processors do no extra work. The maps carry no graph unless
    ``differentiable`` (base pretraining's grounding loss, ``star/world/grounding.py``).
    """

    def __init__(self, transformer: torch.nn.Module, blocks: list[int] | None = None,
                 differentiable: bool = False) -> None:
        joint_blocks = transformer.transformer_blocks
        self.blocks = default_capture_blocks(len(joint_blocks)) if blocks is None else list(blocks)
        bad = [b for b in self.blocks if not 0 <= b < len(joint_blocks)]
        if bad or not self.blocks:
            raise ValueError(f"capture blocks {self.blocks} must be non-empty and within 0..{len(joint_blocks) - 1}")
        self._originals = {b: joint_blocks[b].attn.processor for b in self.blocks}
        self._transformer = transformer
        for b in self.blocks:
            joint_blocks[b].attn.set_processor(CaptureJointAttnProcessor(self))
        self.active = False
        self.differentiable = differentiable  # the maps keep their graph (a loss on them trains q and k)
        self._core_mask: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._calls = 0

    def remove(self) -> None:
        """Restore the processors that were there before."""
        for b, processor in self._originals.items():
            self._transformer.transformer_blocks[b].attn.set_processor(processor)

    @contextmanager
    def recording(self, core_mask: torch.Tensor) -> Iterator[None]:
        """Record during the block; ``core_mask`` (B, L_text) weights the text positions."""
        self._core_mask, self._sum, self._calls, self.active = core_mask, None, 0, True
        try:
            yield
        finally:
            self.active = False

    def add(self, image_query: torch.Tensor, text_key: torch.Tensor) -> None:
        """image_query: (B, H, N, d); text_key: (B, H, L, d). Accumulates (B, N)."""
        assert self._core_mask is not None
        if self._core_mask.shape != (text_key.shape[0], text_key.shape[2]):
            raise ValueError(
                f"core mask has shape {tuple(self._core_mask.shape)} but the block sees "
                f"{text_key.shape[0]} prompts x {text_key.shape[2]} text tokens"
            )
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            logits = image_query @ text_key.transpose(-1, -2) * image_query.shape[-1] ** -0.5
            probs = logits.float().softmax(dim=-1)
            mass = (probs @ self._core_mask.to(probs)[:, None, :, None]).squeeze(-1).mean(dim=1)
        self._sum = mass if self._sum is None else self._sum + mass
        self._calls += 1

    def result(self) -> torch.Tensor:
        """(B, N_image) core-token attention mass averaged over heads and capture blocks."""
        if self._sum is None:
            raise RuntimeError("nothing was recorded: call the transformer inside `recording`")
        return self._sum / self._calls
