"""A GenEval-style training set: GenEval's own prompt templates over its class names and ten
colours, with every evaluation prompt excluded (docs/method.md §8).

Public GenEval training sets are not distributed; Flow-GRPO trained on prompts made from the
same templates as the benchmark. The templates follow GenEval's ``prompts/create_prompts.py``
(facts taken from it, code written here): "a photo of a/an X", "… X and a/an Y", "… of
<two|three|four> X-plural" (plural: "+es" after a final s, else "+s", so "sheeps" as in the
benchmark), "… a/an <colour> X" (never "person"), "… X <left of|right of|above|below> a/an Y"
(the second object is the reference, clause 0), "… a/an <c1> X and a/an <c2> Y" (two different
colours, never "person"). Counting prompts exclude one more than the asked count.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from rewards.geneval_rules import COLORS, RELATIONS, TASKS

Record = dict[str, Any]
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
MAX_ATTEMPTS_PER_PROMPT: int = 50
"""Draws per wanted prompt before a tag is declared exhausted (single_object: all 80 are test prompts)."""


def with_article(word: str) -> str:
    """GenEval's article rule: "an" before a vowel letter."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def make_plural(name: str) -> str:
    """GenEval's plural rule (deliberately naive, as in its benchmark prompts)."""
    return f"{name}es" if name.endswith("s") else f"{name}s"


def prompt_for(record: Record) -> str:
    """The GenEval template's prompt for a record's tag and include clauses."""
    include = record["include"]
    first = include[0]
    tag = record["tag"]
    if tag == "single_object":
        return f"a photo of {with_article(first['class'])}"
    if tag == "two_object":
        return f"a photo of {with_article(first['class'])} and {with_article(include[1]['class'])}"
    if tag == "counting":
        return f"a photo of {NUMBERS[first['count']]} {make_plural(first['class'])}"
    if tag == "colors":
        return f"a photo of {with_article(first['color'])} {first['class']}"
    if tag == "position":  # clause 1 is placed relative to clause 0, the reference
        relation = include[1]["position"][0]
        return f"a photo of {with_article(include[1]['class'])} {relation} {with_article(first['class'])}"
    if tag == "color_attr":
        a, b = include
        return f"a photo of {with_article(a['color'])} {a['class']} and {with_article(b['color'])} {b['class']}"
    raise ValueError(f"unknown GenEval tag {tag!r}")


def _two(rng: np.random.Generator, names: Sequence[str]) -> tuple[str, str]:
    a, b = rng.choice(len(names), size=2, replace=False)
    return names[a], names[b]


def draw_record(tag: str, rng: np.random.Generator, classes: Sequence[str]) -> Record:
    """One random GenEval record of ``tag``: clauses as GenEval's generator draws them, and the prompt."""
    colorable = [c for c in classes if c != "person"]  # no "[colour] person" prompts
    one = classes[rng.integers(len(classes))]
    record: Record
    if tag == "single_object":
        record = {"include": [{"class": one, "count": 1}]}
    elif tag == "two_object":
        a, b = _two(rng, classes)
        record = {"include": [{"class": a, "count": 1}, {"class": b, "count": 1}]}
    elif tag == "counting":
        count = int(rng.integers(2, 5))
        record = {"include": [{"class": one, "count": count}], "exclude": [{"class": one, "count": count + 1}]}
    elif tag == "colors":
        record = {"include": [{"class": colorable[rng.integers(len(colorable))], "count": 1,
                               "color": COLORS[rng.integers(len(COLORS))]}]}
    elif tag == "position":
        a, b = _two(rng, classes)
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        record = {"include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}]}
    elif tag == "color_attr":
        (a, b), (ca, cb) = _two(rng, colorable), _two(rng, COLORS)
        record = {"include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]}
    else:
        raise ValueError(f"unknown GenEval tag {tag!r}")
    record = {"tag": tag, **record}
    return record | {"prompt": prompt_for(record)}


def template_training_set(
    classes: Sequence[str], per_tag: int, seed: int, exclude_prompts: Collection[str]
) -> tuple[list[Record], dict[str, int]]:
    """Up to ``per_tag`` distinct prompts per GenEval tag, none of them in ``exclude_prompts``.

    A tag whose templates run out of unseen prompts stops early (GenEval's test set holds all
    80 single-object prompts, so that tag is empty). Deterministic in ``seed``.

    Returns:
        the records (GenEval metadata, in tag order) and the number written per tag.
    """
    if len(set(classes)) < 2:
        raise ValueError(f"GenEval templates need at least two class names, got {list(classes)!r}")
    excluded = {p.strip().lower() for p in exclude_prompts}
    records: list[Record] = []
    written: dict[str, int] = {}
    for index, tag in enumerate(TASKS):
        rng = np.random.default_rng([seed, index])
        seen: set[str] = set()
        for _ in range(per_tag * MAX_ATTEMPTS_PER_PROMPT):
            if len(seen) == per_tag:
                break
            record = draw_record(tag, rng, classes)
            key = record["prompt"].lower()
            if key not in seen and key not in excluded:
                seen.add(key)
                records.append(record)
        written[tag] = len(seen)
    return records, written
