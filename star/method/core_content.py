"""Core content of a prompt and its token positions in the transformer's text sequence
(docs/method.md §3.1).

The core words come from the prompt's metadata: GenEval object classes and colours, the quoted
text of OCR prompts, else content words after stop-word removal (or an explicit ``core_words``
list in the record). They become character spans of the prompt, and every token whose span
overlaps one is a core position — in each text segment SD3 attends to: the CLIP tokens
(both CLIP encoders share positions) and then the T5 tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rewards.ocr_target import extract_quoted_text

Span = tuple[int, int]

STOP_WORDS: frozenset[str] = frozenset(
    "a an the of on in at to and or with without for from by is are be this that these those its it "
    "photo picture image drawing rendering sign text word words written says that reads showing "
    "one two three four five six seven eight nine ten some very".split()
)
"""Words that never carry core content of a free-form prompt (template and function words)."""


def core_words(prompt: str, record: Mapping[str, Any] | None = None) -> list[str]:
    """The words the user cares about (method §3.1), in order, without duplicates.

    GenEval records: each include clause's class and colour. OCR records (or prompts with a
    quoted string): the quoted text. Otherwise the record's ``core_words`` or the prompt's
    content words.
    """
    record = record or {}
    if "include" in record:
        words = [w for clause in record["include"] for w in (clause.get("color"), clause["class"]) if w]
    elif record.get("core_words"):
        words = list(record["core_words"])
    elif (quoted := record.get("text") or extract_quoted_text(prompt)) is not None:
        words = [quoted]
    else:
        words = [w for w in re.findall(r"[A-Za-z0-9']+", prompt) if w.lower() not in STOP_WORDS]
    return list(dict.fromkeys(words))


def word_spans(prompt: str, words: Sequence[str]) -> list[Span]:
    """Character spans of each word in ``prompt``: case-insensitive whole-word matches, plural
    -s/-es included ("diamonds" for "diamond"). Quoted strings match verbatim. Words absent
    from the prompt contribute nothing."""
    spans = []
    for word in words:
        pattern = rf"(?<!\w){re.escape(word)}(?:e?s)?(?!\w)" if word.replace(" ", "").isalpha() else re.escape(word)
        spans += [m.span() for m in re.finditer(pattern, prompt, flags=re.IGNORECASE)]
    return spans


def _overlaps(start: int, end: int, spans: Sequence[Span]) -> bool:
    return end > start and any(start < b and a < end for a, b in spans)


def token_positions(tokenizer: PreTrainedTokenizerBase, prompt: str, spans: Sequence[Span], length: int) -> list[int]:
    """Positions (within a ``length``-token segment, as the pipeline pads/truncates it) of the
    tokens overlapping ``spans``. Fast tokenizers use offsets; slow ones (e.g. SD3's
    ``CLIPTokenizer``) fall back to matching each span's own tokens as a subsequence."""
    if tokenizer.is_fast:
        encoded = tokenizer(prompt, padding="max_length", max_length=length, truncation=True,
                            return_offsets_mapping=True)
        return [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if _overlaps(a, b, spans)]
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True)["input_ids"]
    positions: set[int] = set()
    for a, b in spans:
        piece = tokenizer(prompt[a:b], add_special_tokens=False)["input_ids"]
        for start in range(len(ids) - len(piece) + 1):
            if piece and ids[start : start + len(piece)] == piece:
                positions.update(range(start, start + len(piece)))
    return sorted(positions)


def text_segments(pipe: Any, which: str = "both") -> list[tuple[PreTrainedTokenizerBase | None, int]]:
    """(tokenizer, length) of each segment of SD3's text sequence, in order: CLIP, then T5.

    ``which`` ('both', 'clip' or 't5', ``train.core_segments``) keeps the core positions of one
    segment only: the other's tokenizer is None, so it keeps its length and marks nothing."""
    from star.models.sd3 import text_sequence_length

    if which not in ("both", "clip", "t5"):
        raise ValueError(f"core segments must be 'both', 'clip' or 't5', got {which!r}")
    clip = pipe.tokenizer if which in ("both", "clip") else None
    t5 = pipe.tokenizer_3 if which in ("both", "t5") else None
    return [(clip, pipe.tokenizer_max_length), (t5, text_sequence_length(pipe))]


def core_token_mask(
    segments: Sequence[tuple[PreTrainedTokenizerBase | None, int]],
    prompts: Sequence[str],
    records: Sequence[Mapping[str, Any] | None],
) -> torch.Tensor:
    """(B, L_text) float mask, 1 on every core token of every segment; L_text = Σ lengths."""
    rows = []
    for prompt, record in zip(prompts, records, strict=True):
        spans = word_spans(prompt, core_words(prompt, record))
        row, offset = torch.zeros(sum(length for _, length in segments)), 0
        for tokenizer, length in segments:
            if tokenizer is not None:  # SD3 without T5 feeds zeros there; or a segment left out
                row[[offset + p for p in token_positions(tokenizer, prompt, spans, length)]] = 1.0
            offset += length
        rows.append(row)
    return torch.stack(rows)
