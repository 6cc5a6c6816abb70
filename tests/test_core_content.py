"""Core content → token positions (method §3.1), on the world tokenizer and a real CLIP BPE
tokenizer (slow and fast) built locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer, CLIPTokenizerFast

from star.method.core_content import core_token_mask, core_words, token_positions, word_spans
from star.models.sd3 import build_world_tokenizer
from star.world.prompts import vocabulary
from star.world.vocab import TEXT_CHARSET


def test_core_words_by_prompt_kind() -> None:
    geneval = {"tag": "color_attr",
               "include": [{"class": "star", "count": 1, "color": "red"}, {"class": "cat", "count": 1}]}
    assert core_words("a photo of a red star and a cat", geneval) == ["red", "star", "cat"]
    assert core_words('a sign with the text "K7Q"', {"tag": "ocr"}) == ["K7Q"]
    assert core_words("A cozy cabin in the snowy woods") == ["cozy", "cabin", "snowy", "woods"]
    assert core_words("anything", {"core_words": ["x", "y"]}) == ["x", "y"]


def test_word_spans_case_plural_and_absent() -> None:
    prompt = "A photo of four Diamonds and a RED star"
    spans = word_spans(prompt, ["diamond", "red", "hexagon"])
    assert sorted(prompt[a:b] for a, b in spans) == ["Diamonds", "RED"]
    assert word_spans("a redstar", ["red"]) == []  # whole words only


def _world(kind: str):
    return build_world_tokenizer(vocabulary(), TEXT_CHARSET, 20, kind)


def test_world_tokenizer_positions() -> None:
    clip, t5 = _world("clip"), _world("t5")
    prompt = "a photo of a red star"
    spans = word_spans(prompt, ["red", "star"])
    assert token_positions(clip, prompt, spans, 20) == [5, 6]  # BOS first
    assert token_positions(t5, prompt, spans, 20) == [4, 5]
    ocr = 'a sign with the text "K7Q"'
    positions = token_positions(clip, ocr, word_spans(ocr, ["K7Q"]), 20)
    assert len(positions) == 3, "a quoted string is one token per character"
    mask = core_token_mask([(clip, 20), (t5, 20)], [prompt, ocr], [None, {"tag": "ocr"}])
    assert mask.shape == (2, 40)
    assert mask[0].nonzero().flatten().tolist() == [5, 6, 24, 25]
    assert mask[1].sum() == 6


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> Path:
    """vocab.json + merges.txt of a small CLIP-style BPE (lower-case, '</w>' word ends) trained
    so that long words split into several tokens."""
    corpus = ["a photo of a red star", "a photo of a cat", "a blue car", "a photo of a dog"] * 50
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789")
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>",
        initial_alphabet=alphabet + [c + "</w>" for c in alphabet],
    )
    bpe.train_from_iterator(corpus, trainer)
    root = tmp_path_factory.mktemp("clip_bpe")
    bpe.model.save(str(root))
    vocab = json.loads((root / "vocab.json").read_text())
    for token in list("abcdefghijklmnopqrstuvwxyz0123456789"):
        vocab.setdefault(token + "</w>", len(vocab))
    (root / "vocab.json").write_text(json.dumps(vocab))
    return root


@pytest.mark.parametrize("fast", [False, True])
def test_clip_bpe_tokenizer_multi_token_words(clip_files: Path, fast: bool) -> None:
    cls = CLIPTokenizerFast if fast else CLIPTokenizer
    tok = cls(str(clip_files / "vocab.json"), str(clip_files / "merges.txt"), pad_token="<|endoftext|>")
    prompt = "a photo of a Giraffe and a red star"
    spans = word_spans(prompt, ["giraffe", "red", "zebra"])
    positions = token_positions(tok, prompt, spans, 32)
    ids = tok(prompt, padding="max_length", max_length=32)["input_ids"]
    pieces = tok.convert_ids_to_tokens([ids[p] for p in positions])
    assert "".join(pieces).replace("</w>", "") == "giraffered", pieces
    assert len(positions) > 2, "'giraffe' is unseen, so it is several BPE tokens"


def test_slow_and_fast_clip_agree(clip_files: Path) -> None:
    slow = CLIPTokenizer(str(clip_files / "vocab.json"), str(clip_files / "merges.txt"), pad_token="<|endoftext|>")
    fast = CLIPTokenizerFast(str(clip_files / "vocab.json"), str(clip_files / "merges.txt"), pad_token="<|endoftext|>")
    prompt = "A photo of a blue car and two dogs"
    spans = word_spans(prompt, ["car", "dog", "blue"])
    assert token_positions(slow, prompt, spans, 24) == token_positions(fast, prompt, spans, 24)
    mask = core_token_mask([(slow, 24), (None, 8)], [prompt], [None])
    assert mask.shape == (1, 32) and mask[0, 24:].sum() == 0
    assert torch.equal(mask[0, :24].nonzero().flatten(), torch.tensor(token_positions(fast, prompt, spans, 24)))
