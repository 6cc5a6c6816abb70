"""Prompts and metadata for the shapes world: GenEval, OCR and caption (preference) sets.

GenEval records copy the official ``evaluation_metadata.jsonl`` conventions exactly (keys
``tag``, ``include``, optional ``exclude``, ``prompt``; "an" before a vowel, so "an orange
circle"; counting 2-4 with ``exclude`` at n + 1; position's reference object first). OCR prompts
put the text between the first pair of double quotes, like the public OCR set.

Split rule. Every record exposes *combination keys* (``combination_keys``): its own (primary)
combination, plus the keys of any other task's combination it contains (a colour-attribute
prompt contains a shape pair and two colour-shape pairs). A fixed ~25% of each family's keys
is test-only (``is_test_combination``): for the finite families the lowest-ranked keys by a
salted hash (so the fraction is exact), for open families (OCR strings, long captions) a hash
threshold. Training records have no test key at all; test records have a test primary key.
So no test combination is ever seen, under any phrasing, in training or pretraining.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from star.world.render import (
    FREE,
    Box,
    Layout,
    Scene,
    default_sign_box,
    render_scene,
    sample_objects,
    sample_sign_scene,
)
from star.world.vocab import (
    COLOR_NAMES,
    GENEVAL_TASKS,
    NUMBER_WORDS,
    PRETRAIN_MIXTURE,
    RELATIONS,
    SHAPE_PLURALS,
    SHAPES,
    SIGN_CHARSET,
    TEXT_LENGTH_WEIGHTS,
)

if TYPE_CHECKING:
    from star.world.config import WorldConfig

Metadata = dict[str, Any]

TEST_FRACTION: float = 0.25
"""Share of each combination family held out for test (rounded per family, at least one)."""
SPLIT_SALT: str = "star-world-split-v1"
"""Changing the salt reshuffles which combinations are test-only."""

GENEVAL_COUNTS: tuple[int, ...] = (2, 3, 4)
"""Counts in GenEval counting prompts, as in the official set; pretraining also uses one."""

CAPTION_OBJECT_WEIGHTS: dict[int, float] = {1: 0.3, 2: 0.5, 3: 0.2}
CAPTION_RELATION_PROB: float = 0.5
"""Chance that a two-object caption states a relation."""

COUNT_SAME_COLOR_PROB: float = 0.5
"""Chance that counted objects share one colour (otherwise each gets its own)."""

OCR_TEMPLATES: tuple[str, ...] = (
    'a sign that says "{text}"',
    'a photo of a sign that says "{text}"',
    'a white sign that reads "{text}"',
    'a sign with the text "{text}"',
    'the word "{text}" written on a sign',
)
CAPTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "one": ("{o1}", "a picture of {o1}", "a drawing of {o1}", "{o1} on a grey background"),
    "two": ("{o1} and {o2}", "a picture of {o1} and {o2}", "{o1} next to {o2}"),
    "relation": ("{o1} {rel} {o2}", "a picture of {o1} {rel} {o2}"),
    "three": ("{o1}, {o2} and {o3}", "a picture of {o1}, {o2} and {o3}"),
}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
_MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


# ------------------------------------------------------------------------------ wording


def article(word: str) -> str:
    """"an" before a vowel sound, else "a" (the official set writes "an orange cow")."""
    return "an" if word[0] in "aeiou" else "a"


def _noun(shape: str, color: str | None = None) -> str:
    """"a circle", "a red circle", "an orange star"."""
    words = f"{color} {shape}" if color else shape
    return f"{article(words)} {words}"


def prompt_words(prompt: str) -> list[str]:
    """Lower-case words of a prompt, punctuation stripped, quoted OCR text removed."""
    unquoted = re.sub(r'"[^"]*"', " ", prompt)
    words = (w.strip(string.punctuation + "“”") for w in unquoted.lower().split())
    return [w for w in words if w]


def vocabulary() -> list[str]:
    """Every word any template can produce (sorted), excluding OCR strings themselves.

    GenEval prompts are enumerated outright (the family is finite); OCR and caption templates
    contribute their literal words, and their slots the articles, colours and shapes.
    """
    texts = [r["prompt"] for records in _geneval_candidates().values() for r in records]
    texts += [t.replace("{text}", " ") for t in OCR_TEMPLATES]
    texts += [re.sub(r"\{\w+\}", " ", t) for group in CAPTION_TEMPLATES.values() for t in group]
    texts += [p for phrases in RELATION_PHRASES.values() for p in phrases]
    texts += [_noun(shape, color) for shape in SHAPES for color in COLOR_NAMES]
    return sorted(set(itertools.chain.from_iterable(prompt_words(t) for t in texts)))


# ------------------------------------------------------------------------------ records


def single_object_record(shape: str) -> Metadata:
    """"a photo of a {shape}"."""
    return {"tag": "single_object", "include": [{"class": shape, "count": 1}], "prompt": f"a photo of {_noun(shape)}"}


def two_object_record(a: str, b: str) -> Metadata:
    """"a photo of a {a} and a {b}" (a != b in every generated set)."""
    include = [{"class": a, "count": 1}, {"class": b, "count": 1}]
    return {"tag": "two_object", "include": include, "prompt": f"a photo of {_noun(a)} and {_noun(b)}"}


def counting_record(shape: str, count: int) -> Metadata:
    """Official form for counts >= 2; count 1 reads "a photo of one circle"."""
    phrase = f"one {shape}" if count == 1 else f"{NUMBER_WORDS[count]} {SHAPE_PLURALS[shape]}"
    return {
        "tag": "counting",
        "include": [{"class": shape, "count": count}],
        "exclude": [{"class": shape, "count": count + 1}],
        "prompt": f"a photo of {phrase}",
    }


def colors_record(shape: str, color: str) -> Metadata:
    """"a photo of a {color} {shape}"."""
    include = [{"class": shape, "count": 1, "color": color}]
    return {"tag": "colors", "include": include, "prompt": f"a photo of {_noun(shape, color)}"}


def position_record(a: str, relation: str, b: str) -> Metadata:
    """"a photo of an A {relation} a B": B (the reference) first, A with ``[relation, 0]``."""
    include = [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}]
    return {"tag": "position", "include": include, "prompt": f"a photo of {_noun(a)} {relation} {_noun(b)}"}


def color_attr_record(a: str, color_a: str, b: str, color_b: str) -> Metadata:
    """"a photo of a {color_a} {a} and a {color_b} {b}" (different shapes and colours in sets)."""
    include = [{"class": a, "count": 1, "color": color_a}, {"class": b, "count": 1, "color": color_b}]
    prompt = f"a photo of {_noun(a, color_a)} and {_noun(b, color_b)}"
    return {"tag": "color_attr", "include": include, "prompt": prompt}


def ocr_record(text: str, template: str = OCR_TEMPLATES[0]) -> Metadata:
    """``{"tag": "ocr", "text", "prompt"}``; the text sits between the prompt's first quotes."""
    return {"tag": "ocr", "text": text, "prompt": template.format(text=text)}


def caption_record(
    objects: Sequence[tuple[str, str]], relation: str | None = None, template: int = 0, phrase: int = 0
) -> Metadata:
    """A free caption of 1-3 ``(shape, colour)`` objects; a relation (2 objects) reads
    "objects[0] {relation} objects[1]". ``template``/``phrase`` pick the wording."""
    nouns = {f"o{i + 1}": _noun(shape, color) for i, (shape, color) in enumerate(objects)}
    if relation is not None:
        group, nouns["rel"] = "relation", RELATION_PHRASES[relation][phrase % len(RELATION_PHRASES[relation])]
    else:
        group = ("one", "two", "three")[len(objects) - 1]
    templates = CAPTION_TEMPLATES[group]
    record: Metadata = {
        "tag": "caption",
        "prompt": templates[template % len(templates)].format(**nouns),
        "objects": [{"shape": shape, "color": color} for shape, color in objects],
    }
    if relation is not None:
        record["relation"] = [relation, 0, 1]
    return record


# ------------------------------------------------------------------------------ split rule


def shape_key(shape: str) -> str:
    """Key of a lone shape (single_object, and counting with one)."""
    return f"shape:{shape}"


def pair_key(a: str, b: str) -> str:
    """Key of an unordered shape pair."""
    return "pair:" + "+".join(sorted((a, b)))


def count_key(shape: str, count: int) -> str:
    """"one circle" is the single-object combination, so count 1 shares its key."""
    return shape_key(shape) if count == 1 else f"count:{shape}:{count}"


def color_key(shape: str, color: str) -> str:
    """Key of a colour-shape pair."""
    return f"color:{color}:{shape}"


def position_key(a: str, relation: str, b: str) -> str:
    """Canonical layout key: "A left of B" and "B right of A" are one combination."""
    if relation in ("right of", "below"):
        a, relation, b = b, _MIRROR[relation], a
    axis = "h" if relation == "left of" else "v"
    return f"pos:{axis}:{a}:{b}"


def color_attr_key(a: str, color_a: str, b: str, color_b: str) -> str:
    """Key of an unordered pair of coloured shapes."""
    return "cattr:" + "+".join(sorted((f"{color_a}:{a}", f"{color_b}:{b}")))


def ocr_key(text: str) -> str:
    """Key of an OCR string (split by hash threshold: the family is open)."""
    return f"ocr:{text}"


def caption_key(objects: Sequence[tuple[str, str]], relation: str | None) -> str:
    """One object is a colour-shape pair, two distinct shapes a colour-attribute pair; other
    captions get their own key (objects sorted unless a relation orders them)."""
    if relation is None and len(objects) == 1:
        return color_key(*objects[0])
    if relation is None and len(objects) == 2 and objects[0][0] != objects[1][0]:
        (a, ca), (b, cb) = objects
        return color_attr_key(a, ca, b, cb)
    parts = [f"{color}:{shape}" for shape, color in objects]
    if relation is None:
        return "caption:" + "+".join(sorted(parts))
    if relation in ("right of", "below"):
        parts, relation = parts[::-1], _MIRROR[relation]
    return f"caption:{parts[0]}:{relation}:{parts[1]}"


def _hash_unit(key: str) -> float:
    """A salted, platform-independent hash of ``key`` in [0, 1)."""
    digest = hashlib.blake2b(f"{SPLIT_SALT}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _finite_strata() -> list[list[str]]:
    """Key strata of the finite families; each stratum holds out its own exact fraction."""
    pairs = list(itertools.combinations(SHAPES, 2))
    ordered = list(itertools.permutations(SHAPES, 2))
    cattr = {color_attr_key(a, ca, b, cb) for a, b in pairs for ca, cb in itertools.permutations(COLOR_NAMES, 2)}
    return [
        [shape_key(s) for s in SHAPES],
        [pair_key(a, b) for a, b in pairs],
        *([count_key(s, n) for s in SHAPES] for n in GENEVAL_COUNTS),
        [color_key(s, c) for s in SHAPES for c in COLOR_NAMES],
        [position_key(a, "left of", b) for a, b in ordered],
        [position_key(a, "above", b) for a, b in ordered],
        sorted(cattr),
    ]


@functools.lru_cache(maxsize=1)
def _held_out() -> tuple[frozenset[str], frozenset[str]]:
    """(all finite keys, the test-only ones): per stratum the round(fraction * n) lowest hashes."""
    known: set[str] = set()
    test: set[str] = set()
    for keys in _finite_strata():
        k = min(len(keys) - 1, max(1, math.floor(TEST_FRACTION * len(keys) + 0.5)))
        test.update(sorted(keys, key=_hash_unit)[:k])
        known.update(keys)
    return frozenset(known), frozenset(test)


def is_test_combination(key: str) -> bool:
    """Whether a combination key is test-only (finite families by rank, others by threshold)."""
    known, test = _held_out()
    if key in known:
        return key in test
    return _hash_unit(key) < TEST_FRACTION


def combination_keys(metadata: Metadata) -> tuple[str, ...]:
    """All combination keys a record shows, its primary key first."""
    tag = metadata["tag"]
    if tag == "ocr":
        return (ocr_key(metadata["text"]),)
    if tag == "caption":
        return _caption_keys(metadata)
    inc = metadata["include"]
    if tag == "single_object":
        return (shape_key(inc[0]["class"]),)
    if tag == "two_object":
        return (pair_key(inc[0]["class"], inc[1]["class"]),)
    if tag == "counting":
        return (count_key(inc[0]["class"], inc[0]["count"]),)
    if tag == "colors":
        return (color_key(inc[0]["class"], inc[0]["color"]),)
    if tag == "position":
        (b, a), relation = (c["class"] for c in inc), inc[1]["position"][0]
        return (position_key(a, relation, b), pair_key(a, b))
    if tag == "color_attr":
        (a, ca), (b, cb) = ((c["class"], c["color"]) for c in inc)
        return (color_attr_key(a, ca, b, cb), pair_key(a, b), color_key(a, ca), color_key(b, cb))
    raise ValueError(f"unknown tag {tag!r}")


def _caption_keys(metadata: Metadata) -> tuple[str, ...]:
    """A caption's own key, then its colour-shape, pair, colour-attribute and layout keys."""
    objects = [(o["shape"], o["color"]) for o in metadata["objects"]]
    relation = metadata.get("relation")
    keys = [caption_key(objects, relation[0] if relation else None)]
    keys += [color_key(s, c) for s, c in objects]
    for (a, ca), (b, cb) in itertools.combinations(objects, 2):
        if a != b:
            keys += [pair_key(a, b), color_attr_key(a, ca, b, cb)]
    if relation and objects[relation[1]][0] != objects[relation[2]][0]:
        keys.append(position_key(objects[relation[1]][0], relation[0], objects[relation[2]][0]))
    return tuple(dict.fromkeys(keys))


def is_test_metadata(metadata: Metadata) -> bool:
    """True when any combination the record shows is test-only (never train on it)."""
    return any(is_test_combination(k) for k in combination_keys(metadata))


def split_of(metadata: Metadata) -> str | None:
    """"train" (no test key), "test" (test primary key) or None (test sub-key only)."""
    keys = combination_keys(metadata)
    if is_test_combination(keys[0]):
        return "test"
    return None if any(is_test_combination(k) for k in keys[1:]) else "train"


# ------------------------------------------------------------------------------ sampling


@functools.lru_cache(maxsize=1)
def _geneval_candidates() -> dict[str, tuple[Metadata, ...]]:
    """Every GenEval record the world can phrase, per tag (counting includes count 1)."""
    ordered = list(itertools.permutations(SHAPES, 2))
    return {
        "single_object": tuple(single_object_record(s) for s in SHAPES),
        "two_object": tuple(two_object_record(a, b) for a, b in ordered),
        "counting": tuple(counting_record(s, n) for n in (1, *GENEVAL_COUNTS) for s in SHAPES),
        "colors": tuple(colors_record(s, c) for s in SHAPES for c in COLOR_NAMES),
        "position": tuple(position_record(a, r, b) for a, b in ordered for r in RELATIONS),
        "color_attr": tuple(
            # two different colours, as in every official color_attr prompt
            color_attr_record(a, ca, b, cb) for a, b in ordered for ca, cb in itertools.permutations(COLOR_NAMES, 2)
        ),
    }


@functools.lru_cache(maxsize=32)
def geneval_pool(tag: str, split: str, with_count_one: bool = False) -> tuple[Metadata, ...]:
    """All records of one GenEval tag in one split ("train" or "test"); treat them as read-only.

    ``with_count_one`` keeps "a photo of one circle" counting records (pretraining only: the
    official set counts 2-4).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pool = tuple(
        r
        for r in _geneval_candidates()[tag]
        if split_of(r) == split and (with_count_one or r["include"][0]["count"] > 1 or tag != "counting")
    )
    if not pool:
        raise RuntimeError(f"no {split} combinations for {tag}: change SPLIT_SALT or TEST_FRACTION")
    return pool


# Round-robin groups when drawing a set, so small sets still cover every group value.
_GROUP_BY: dict[str, Callable[[Metadata], str]] = {
    "single_object": lambda r: r["include"][0]["class"],
    "two_object": lambda r: pair_key(r["include"][0]["class"], r["include"][1]["class"]),
    "counting": lambda r: str(r["include"][0]["count"]),
    "colors": lambda r: r["include"][0]["color"],
    "position": lambda r: r["include"][1]["position"][0],
    "color_attr": lambda r: r["include"][0]["color"],
}


def _balanced_draw(
    pool: Sequence[Metadata], n: int, rng: np.random.Generator, group: Callable[[Metadata], str]
) -> list[Metadata]:
    """``n`` deep copies from ``pool``: groups in shuffled round-robin, each group shuffled;
    the pool is reshuffled and cycled again when ``n`` exceeds it."""
    out: list[Metadata] = []
    while len(out) < n:
        groups: dict[str, list[Metadata]] = {}
        for record in pool:
            groups.setdefault(group(record), []).append(record)
        names = [sorted(groups)[i] for i in rng.permutation(len(groups))]
        queues = [[groups[g][i] for i in rng.permutation(len(groups[g]))] for g in names]
        for row in itertools.zip_longest(*queues):
            out.extend(json.loads(json.dumps(r)) for r in row if r is not None)
    return out[:n]


def _geneval_set(rng: np.random.Generator, split: str, n: int) -> list[Metadata]:
    """``n`` records balanced over the six tags (the first ``n % 6`` tags get one more)."""
    records: list[Metadata] = []
    for i, tag in enumerate(GENEVAL_TASKS):
        n_tag = n // len(GENEVAL_TASKS) + int(i < n % len(GENEVAL_TASKS))
        records += _balanced_draw(geneval_pool(tag, split), n_tag, rng, _GROUP_BY[tag])
    return records


def _choice(rng: np.random.Generator, weights: dict[Any, float]) -> Any:
    """One key of ``weights`` drawn in proportion to its value."""
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _sample_until(rng: np.random.Generator, split: str, draw: Callable[[np.random.Generator], Metadata]) -> Metadata:
    """Redraw until the record belongs to ``split`` (a test record needs a test primary key)."""
    for _ in range(10_000):
        record = draw(rng)
        if split_of(record) == split:
            return record
    raise RuntimeError(f"no {split} record found in 10000 draws")


@dataclass(frozen=True)
class SignText:
    """What the world's signs say (``world.text_charset``, ``world.text_lengths``): a length drawn
    from ``lengths`` (length -> weight), then that many characters uniformly from ``charset``."""

    charset: str = SIGN_CHARSET
    lengths: tuple[tuple[int, float], ...] = tuple(TEXT_LENGTH_WEIGHTS.items())


DEFAULT_TEXT = SignText()


def world_text(world: WorldConfig) -> SignText:
    """The ``SignText`` of a ``WorldConfig``."""
    return SignText(world.text_charset, tuple(world.text_lengths.items()))


def _draw_ocr(rng: np.random.Generator, text: SignText = DEFAULT_TEXT) -> Metadata:
    """A random OCR record: length from ``text.lengths``, uniform characters and template."""
    length = _choice(rng, dict(text.lengths))
    chars = "".join(text.charset[i] for i in rng.integers(len(text.charset), size=length))
    return ocr_record(chars, OCR_TEMPLATES[int(rng.integers(len(OCR_TEMPLATES)))])


def _draw_caption(rng: np.random.Generator) -> Metadata:
    """A random caption: 1-3 objects with uniform shapes and colours, maybe a relation."""
    n = _choice(rng, CAPTION_OBJECT_WEIGHTS)
    objects = [(SHAPES[rng.integers(len(SHAPES))], COLOR_NAMES[rng.integers(len(COLOR_NAMES))]) for _ in range(n)]
    relation = RELATIONS[rng.integers(len(RELATIONS))] if n == 2 and rng.random() < CAPTION_RELATION_PROB else None
    return caption_record(objects, relation, template=int(rng.integers(4)), phrase=int(rng.integers(2)))


def _distinct_set(
    rng: np.random.Generator, split: str, n: int, draw: Callable[[np.random.Generator], Metadata]
) -> list[Metadata]:
    """``n`` records of ``split``, distinct prompts while fresh ones keep coming."""
    records: list[Metadata] = []
    seen: set[str] = set()
    misses = 0
    while len(records) < n:
        record = _sample_until(rng, split, draw)
        if record["prompt"] in seen and misses < 50 * n:
            misses += 1
            continue
        seen.add(record["prompt"])
        records.append(record)
    return records


def generate_prompt_sets(
    seed: int, n_train: int, n_test: int, text: SignText = DEFAULT_TEXT
) -> dict[str, dict[str, list[Metadata]]]:
    """World prompt sets: ``{"geneval"|"ocr"|"pickscore": {"train"|"test": [metadata, ...]}}``.

    ``n_train``/``n_test`` records per family and split; GenEval is balanced over its six tags;
    OCR strings follow ``text``. Deterministic in ``seed``; every family and split draws from its
    own random stream.
    """
    sets: dict[str, dict[str, list[Metadata]]] = {"geneval": {}, "ocr": {}, "pickscore": {}}
    for s, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        sets["geneval"][split] = _geneval_set(np.random.default_rng([seed, 0, s]), split, n)
        draw_ocr = functools.partial(_draw_ocr, text=text)
        sets["ocr"][split] = _distinct_set(np.random.default_rng([seed, 1, s]), split, n, draw_ocr)
        sets["pickscore"][split] = _distinct_set(np.random.default_rng([seed, 2, s]), split, n, _draw_caption)
    return sets


# ------------------------------------------------------------------------------ scenes


def _random_color(rng: np.random.Generator) -> str:
    """A uniformly random palette colour name."""
    return COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]


def _include_layout(
    include: Sequence[dict[str, Any]], rng: np.random.Generator
) -> tuple[list[tuple[str, str]], list[tuple[int, str, int]]]:
    """Object specs and relations for GenEval ``include`` clauses (random colour where none)."""
    specs: list[tuple[str, str]] = []
    first: list[int] = []  # index of each clause's first object, for position references
    for clause in include:
        first.append(len(specs))
        count, color = int(clause.get("count", 1)), clause.get("color")
        shared = color or (_random_color(rng) if rng.random() < COUNT_SAME_COLOR_PROB else None)
        specs += [(clause["class"], shared or _random_color(rng)) for _ in range(count)]
    relations = [
        (first[i], clause["position"][0], first[int(clause["position"][1])])
        for i, clause in enumerate(include)
        if clause.get("position")
    ]
    return specs, relations


def scene_for_metadata(metadata: Metadata, rng: np.random.Generator, image_size: int = 64,
                       layout: Layout = FREE) -> Scene:
    """A ground-truth scene satisfying ``metadata`` (GenEval, "ocr" or "caption" records);
    A ``layout`` with a cell puts each object in its own cell of a grid (``render.sample_boxes``)."""
    tag = metadata["tag"]
    if tag == "ocr":
        return sample_sign_scene(rng, metadata["text"], image_size, layout)
    if tag == "caption":
        specs = [(o["shape"], o["color"]) for o in metadata["objects"]]
        rel = metadata.get("relation")
        relations = [(int(rel[1]), rel[0], int(rel[2]))] if rel else []
    else:
        specs, relations = _include_layout(metadata["include"], rng)
    return Scene(sample_objects(rng, specs, image_size, relations=relations, layout=layout), image_size=image_size)


def render_records(
    records: Sequence[Metadata], image_size: int, rng: np.random.Generator, layout: Layout = FREE
) -> np.ndarray:
    """A ground-truth picture per record, drawn with ``scene_for_metadata``: (N, H, W, 3) uint8."""
    return np.stack([np.asarray(render_scene(scene_for_metadata(r, rng, image_size, layout))) for r in records])


def scene_boxes(scene: Scene) -> list[Box]:
    """Where a scene's content is: its objects' boxes and, with text, its sign's."""
    boxes = [spec.box for spec in scene.objects]
    if scene.text:
        boxes.append(scene.sign_box or default_sign_box(scene.image_size))
    return boxes


def sample_training_scene(
    rng: np.random.Generator,
    image_size: int = 64,
    layout: Layout = FREE,
    text: SignText = DEFAULT_TEXT,
    mixture: dict[str, float] = PRETRAIN_MIXTURE,
) -> tuple[Scene, str, Metadata]:
    """One pretraining ``(scene, caption, metadata)`` from TRAIN combinations only.

    The family is drawn from ``mixture`` (``base.mixture``); the record uniformly from that
    family's train records (OCR strings, following ``text``, and captions freshly drawn,
    rejecting test combinations).
    """
    family = _choice(rng, mixture)
    if family == "ocr":
        metadata = _sample_until(rng, "train", functools.partial(_draw_ocr, text=text))
    elif family == "caption":
        metadata = _sample_until(rng, "train", _draw_caption)
    else:
        pool = geneval_pool(family, "train", with_count_one=True)
        metadata = json.loads(json.dumps(pool[int(rng.integers(len(pool)))]))
    scene = scene_for_metadata(metadata, rng, image_size, layout)
    return scene, metadata["prompt"], metadata
