"""The OCR task's target text: what a prompt asks to be written (shared by the OCR reward and the
prompt-set parsers, so both read a prompt the same way)."""

from __future__ import annotations


def extract_quoted_text(prompt: str) -> str | None:
    """The text between the first pair of double quotes (possibly empty), or None when the
    prompt has fewer than two double quotes."""
    start = prompt.find('"')
    end = prompt.find('"', start + 1) if start >= 0 else -1
    return prompt[start + 1 : end] if end >= 0 else None
