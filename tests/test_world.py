"""Tests of the shapes world: renderer, layouts, prompt sets, split rule and detector."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from star.world import prompts as P
from star.world.detector import detect
from star.world.render import (
    MIN_GAP,
    Layout,
    ObjectSpec,
    Scene,
    render_array,
    render_scene,
    sample_count_scene,
    sample_relation_scene,
    sample_scene,
    sample_sign_scene,
    shape_mask,
)
from star.world.vocab import (
    BACKGROUND_RGB,
    COLOR_NAMES,
    COLORS,
    GENEVAL_TASKS,
    NUMBER_WORDS,
    RELATIONS,
    SHAPE_PLURALS,
    SHAPES,
    TEXT_CHARSET,
)

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"


# ----------------------------------------------------------------------------- helpers


def geneval_relation(box_a: tuple[float, ...], box_b: tuple[float, ...]) -> set[str]:
    """GenEval's position rule, written out independently of the world's modules."""
    a, b = np.asarray(box_a, float), np.asarray(box_b, float)
    center_a, center_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    dim_a, dim_b = a[2:] - a[:2], b[2:] - b[:2]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - 0.1 * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    found = set()
    if dx < -0.5:
        found.add("left of")
    if dx > 0.5:
        found.add("right of")
    if dy < -0.5:
        found.add("above")
    if dy > 0.5:
        found.add("below")
    return found


def random_specs(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    return [(SHAPES[rng.integers(6)], COLOR_NAMES[rng.integers(10)]) for _ in range(n)]


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detector_tally(scenes: list[Scene], images: list[np.ndarray], threshold: float = 0.3) -> dict[str, float]:
    """Greedy IoU >= 0.5 matching; class/colour accuracy over matches, recall and precision."""
    objects = matched = class_ok = color_ok = detections = 0
    for scene, image in zip(scenes, images):
        found = [d for d in detect(image) if d.score >= threshold]
        detections += len(found)
        objects += len(scene.objects)
        pairs = sorted(
            ((box_iou(o.box, d.box), i, j) for i, o in enumerate(scene.objects) for j, d in enumerate(found)),
            reverse=True,
        )
        used_o, used_d = set(), set()
        for iou, i, j in pairs:
            if iou >= 0.5 and i not in used_o and j not in used_d:
                used_o.add(i)
                used_d.add(j)
                matched += 1
                class_ok += scene.objects[i].shape == found[j].class_name
                color_ok += scene.objects[i].color == found[j].color
    return {
        "class": class_ok / max(matched, 1),
        "color": color_ok / max(matched, 1),
        "recall": matched / objects,
        "precision": matched / max(detections, 1),
    }


def random_scenes(seed: int, n: int, size: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, random_specs(rng, int(rng.integers(1, 5))), size) for _ in range(n)]


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    soft = ndimage.gaussian_filter(image.astype(np.float32), sigma=(0.7, 0.7, 0))
    return np.clip(soft + rng.normal(0, 8, soft.shape), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_size_determinism_and_exact_colours(size: int) -> None:
    scenes_a, scenes_b = random_scenes(3, 20, size), random_scenes(3, 20, size)
    assert scenes_a == scenes_b
    palette = {tuple(c) for c in COLORS.values()} | {BACKGROUND_RGB}
    for scene in scenes_a:
        image = render_scene(scene)
        assert image.mode == "RGB" and image.size == (size, size)
        pixels = np.asarray(image)
        np.testing.assert_array_equal(pixels, render_array(scene))
        assert {tuple(int(v) for v in c) for c in np.unique(pixels.reshape(-1, 3), axis=0)} <= palette


def test_painted_pixels_fill_each_box_exactly() -> None:
    for scene in random_scenes(4, 50, 64):
        pixels = render_array(scene)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            own = np.all(pixels[y0:y1, x0:x1] == COLORS[obj.color], axis=-1)
            assert own.any(axis=0).all() and own.any(axis=1).all(), obj


def test_shapes_are_distinct_at_small_sizes() -> None:
    for side in range(10, 25):
        masks = [shape_mask(s, side, side) for s in SHAPES]
        for i in range(len(SHAPES)):
            for j in range(i + 1, len(SHAPES)):
                iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
                assert iou < 0.85, (SHAPES[i], SHAPES[j], side, iou)


def test_sign_scene_has_text_on_white_and_no_detections() -> None:
    rng = np.random.default_rng(0)
    for text in ["A", "K7", "Q8Z", "W0M8"]:
        scene = sample_sign_scene(rng, text, 64)
        pixels = render_array(scene)
        x0, y0, x1, y1 = scene.sign_box
        sign = pixels[y0:y1, x0:x1]
        assert np.all(sign == COLORS["black"], axis=-1).sum() > 10
        assert np.all(sign == COLORS["white"], axis=-1).mean() > 0.4
        assert [d for d in detect(pixels) if d.score >= 0.3] == []


def test_render_speed() -> None:
    import time

    scenes = random_scenes(5, 200, 64)
    start = time.perf_counter()
    for scene in scenes:
        render_scene(scene)
    assert (time.perf_counter() - start) / len(scenes) < 2e-3


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("size", [32, 64, 128])
def test_layouts_inside_and_apart(size: int) -> None:
    for scene in random_scenes(6, 150, size):
        boxes = [o.box for o in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert x1 - x0 >= 10
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                gap_x = max(b[0] - a[2], a[0] - b[2])
                gap_y = max(b[1] - a[3], a[1] - b[3])
                assert max(gap_x, gap_y) >= MIN_GAP, (a, b)


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("relation", RELATIONS)
def test_relation_layouts_hold_under_geneval_rule(size: int, relation: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(60):
        (a, b) = random_specs(rng, 2)
        scene = sample_relation_scene(rng, a, relation, b, size)
        box_a, box_b = scene.objects[0].box, scene.objects[1].box
        assert relation in geneval_relation(box_a, box_b)
        # with margin: still holds when each box moves by a pixel towards the other
        shift = {"left of": (1, 0), "right of": (-1, 0), "above": (0, 1), "below": (0, -1)}[relation]
        moved = (box_a[0] + shift[0], box_a[1] + shift[1], box_a[2] + shift[0], box_a[3] + shift[1])
        assert relation in geneval_relation(moved, box_b)


def test_count_scene() -> None:
    rng = np.random.default_rng(8)
    for n in range(1, 5):
        scene = sample_count_scene(rng, "star", n, "red")
        assert len(scene.objects) == n and {o.shape for o in scene.objects} == {"star"}


# ----------------------------------------------------------------------------- prompts


@pytest.fixture(scope="module")
def sets() -> dict[str, dict[str, list[dict]]]:
    return P.generate_prompt_sets(seed=0, n_train=600, n_test=120)


def test_prompt_sets_deterministic_and_sized(sets: dict) -> None:
    assert sets == P.generate_prompt_sets(seed=0, n_train=600, n_test=120)
    assert sets != P.generate_prompt_sets(seed=1, n_train=600, n_test=120)
    for family in ("geneval", "ocr", "pickscore"):
        assert len(sets[family]["train"]) == 600 and len(sets[family]["test"]) == 120
    for split, n in (("train", 600), ("test", 120)):
        tags = [r["tag"] for r in sets["geneval"][split]]
        assert {t: tags.count(t) for t in GENEVAL_TASKS} == {t: n // 6 for t in GENEVAL_TASKS}


def test_train_test_disjoint_by_combination(sets: dict) -> None:
    for family in sets:
        train, test = sets[family]["train"], sets[family]["test"]
        train_keys = {k for r in train for k in P.combination_keys(r)}
        for record in test:
            assert P.combination_keys(record)[0] not in train_keys, record
            assert P.is_test_metadata(record)
        assert not any(P.is_test_metadata(r) for r in train)
        assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}


def test_split_coverage(sets: dict) -> None:
    train, test = sets["geneval"]["train"], sets["geneval"]["test"]
    assert {r["tag"] for r in test} == set(GENEVAL_TASKS)
    relations = lambda rs: {r["include"][1]["position"][0] for r in rs if r["tag"] == "position"}  # noqa: E731
    assert relations(train) == relations(test) == set(RELATIONS)
    classes = {c["class"] for r in train for c in r["include"]}
    colors = {c["color"] for r in train for c in r["include"] if "color" in c}
    counts = {r["include"][0]["count"] for r in train if r["tag"] == "counting"}
    assert classes == set(SHAPES) and colors == set(COLOR_NAMES) and counts == set(P.GENEVAL_COUNTS)
    for tag in GENEVAL_TASKS:
        for split in ("train", "test"):
            assert P.geneval_pool(tag, split)
    fraction = np.mean([P.is_test_combination(P.color_key(s, c)) for s in SHAPES for c in COLOR_NAMES])
    assert 0.2 <= fraction <= 0.3


def test_geneval_format_matches_official(sets: dict) -> None:
    official = [json.loads(line) for line in OFFICIAL.read_text().splitlines()] if OFFICIAL.exists() else []
    official_keys = {tuple(r) for r in official}
    official_keys = official_keys or {("tag", "include", "prompt"), ("tag", "include", "exclude", "prompt")}
    templates = {
        "single_object": r"a photo of an? (\w+)",
        "two_object": r"a photo of an? (\w+) and an? (\w+)",
        "counting": r"a photo of (two|three|four) (\w+)",
        "colors": r"a photo of an? (\w+) (\w+)",
        "position": r"a photo of an? (\w+) (left of|right of|above|below) an? (\w+)",
        "color_attr": r"a photo of an? (\w+) (\w+) and an? (\w+) (\w+)",
    }
    for record in sets["geneval"]["train"] + sets["geneval"]["test"]:
        assert tuple(record) in official_keys
        assert isinstance(record["prompt"], str) and isinstance(record["include"], list)
        match = re.fullmatch(templates[record["tag"]], record["prompt"])
        assert match, record
        assert not re.search(r"\ba [aeiou]", record["prompt"]) and not re.search(r"\ban [^aeiou]", record["prompt"])
        inc = record["include"]
        assert all(isinstance(c["count"], int) and c["class"] in SHAPES for c in inc)
        if record["tag"] == "counting":
            n = inc[0]["count"]
            assert match.group(1) == NUMBER_WORDS[n] and match.group(2) == SHAPE_PLURALS[inc[0]["class"]]
            assert record["exclude"] == [{"class": inc[0]["class"], "count": n + 1}]
        if record["tag"] == "position":
            a, relation, b = match.groups()
            assert inc == [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}]
        if record["tag"] in ("two_object", "color_attr", "position"):
            assert inc[0]["class"] != inc[1]["class"]
        if record["tag"] == "color_attr":
            assert inc[0]["color"] != inc[1]["color"]
            assert match.groups() == (inc[0]["color"], inc[0]["class"], inc[1]["color"], inc[1]["class"])


def test_ocr_and_caption_records(sets: dict) -> None:
    for record in sets["ocr"]["train"] + sets["ocr"]["test"]:
        assert set(record) == {"tag", "text", "prompt"}
        assert re.search(r'"([^"]*)"', record["prompt"]).group(1) == record["text"]
        assert 1 <= len(record["text"]) <= 4 and set(record["text"]) <= set(TEXT_CHARSET)
    for record in sets["pickscore"]["train"] + sets["pickscore"]["test"]:
        assert record["tag"] == "caption" and 1 <= len(record["objects"]) <= 3
        for obj in record["objects"]:
            assert obj["shape"] in SHAPES and obj["color"] in COLOR_NAMES
            assert f"{obj['color']} {obj['shape']}" in record["prompt"]


def test_vocabulary_covers_prompts(sets: dict) -> None:
    vocab = set(P.vocabulary())
    assert all(w == w.lower() and w.isalpha() for w in vocab)
    prompts = [r["prompt"] for family in sets.values() for split in family.values() for r in split]
    rng = np.random.default_rng(11)
    prompts += [P.sample_training_scene(rng, 32)[1] for _ in range(1500)]
    prompts += [
        P.caption_record(random_specs(rng, 2), r, t, p)["prompt"] for r in RELATIONS for t in range(2) for p in range(2)
    ]
    words = {w for prompt in prompts for w in P.prompt_words(prompt)}
    assert words <= vocab, words - vocab
    assert {"an", "orange", "one", "left", "says"} <= words


def test_pretraining_uses_train_combinations_only() -> None:
    rng = np.random.default_rng(12)
    tags = set()
    for _ in range(1500):
        scene, caption, metadata = P.sample_training_scene(rng, 64)
        assert scene.image_size == 64 and caption == metadata["prompt"]
        assert P.split_of(metadata) == "train" and not P.is_test_metadata(metadata)
        tags.add(metadata["tag"])
    assert tags == set(GENEVAL_TASKS) | {"ocr", "caption"}


def scene_satisfies(scene: Scene, record: dict) -> bool:
    """Check a GenEval record against ground-truth objects with the official logic."""
    groups = []
    for clause in record["include"]:
        objs = [o for o in scene.objects if o.shape == clause["class"]]
        if len(objs) < clause["count"] or ("color" in clause and any(o.color != clause["color"] for o in objs)):
            return False
        groups.append(objs)
        if "position" in clause:
            relation, ref = clause["position"]
            if not all(relation in geneval_relation(o.box, r.box) for o in objs for r in groups[ref]):
                return False
    for clause in record.get("exclude", []):
        if sum(o.shape == clause["class"] for o in scene.objects) >= clause["count"]:
            return False
    return True


def test_scene_for_metadata_satisfies_records(sets: dict) -> None:
    rng = np.random.default_rng(13)
    for record in sets["geneval"]["test"] + sets["geneval"]["train"][::5]:
        assert scene_satisfies(P.scene_for_metadata(record, rng, 64), record), record
    for record in sets["ocr"]["test"][:10]:
        assert P.scene_for_metadata(record, rng).text == record["text"]
    for record in sets["pickscore"]["test"]:
        scene = P.scene_for_metadata(record, rng)
        assert [(o.shape, o.color) for o in scene.objects] == [(o["shape"], o["color"]) for o in record["objects"]]
        if "relation" in record:
            relation, i, j = record["relation"]
            assert relation in geneval_relation(scene.objects[i].box, scene.objects[j].box)


# ----------------------------------------------------------------------------- detector


def test_detector_accuracy_64() -> None:
    scenes = random_scenes(20, 300, 64)
    tally = detector_tally(scenes, [render_array(s) for s in scenes])
    assert tally["class"] >= 0.99 and tally["color"] >= 0.99, tally
    assert tally["recall"] >= 0.99 and tally["precision"] >= 0.99, tally


@pytest.mark.parametrize("size", [32, 128])
def test_detector_accuracy_other_sizes(size: int) -> None:
    scenes = random_scenes(21, 80, size)
    tally = detector_tally(scenes, [render_array(s) for s in scenes])
    assert min(tally.values()) >= 0.98, tally


def test_detector_on_blurred_noisy_images() -> None:
    rng = np.random.default_rng(22)
    scenes = random_scenes(22, 150, 64)
    tally = detector_tally(scenes, [degrade(render_array(s), rng) for s in scenes])
    assert tally["recall"] >= 0.9 and tally["class"] >= 0.95 and tally["color"] >= 0.99, tally


def test_detector_outputs_and_inputs() -> None:
    scene = Scene((ObjectSpec("star", "orange", (10, 12, 30, 32)), ObjectSpec("circle", "white", (40, 5, 55, 20))))
    pixels = render_array(scene)
    for image in (pixels, pixels.astype(np.float32) / 255.0, render_scene(scene)):
        found = sorted(detect(image), key=lambda d: d.box)
        assert [(d.class_name, d.color) for d in found] == [("star", "orange"), ("circle", "white")]
        assert [d.box for d in found] == [(10.0, 12.0, 30.0, 32.0), (40.0, 5.0, 55.0, 20.0)]
        assert all(d.score > 0.9 and d.mask.shape == (64, 64) and d.mask.dtype == bool for d in found)
        assert found[0].mask.sum() == shape_mask("star", 20, 20).sum()


def test_detector_scores_blobs_low() -> None:
    yy, xx = np.mgrid[:64, :64]
    pixels = np.empty((64, 64, 3), np.uint8)
    pixels[:] = BACKGROUND_RGB
    rng = np.random.default_rng(0)
    speckles = ndimage.binary_dilation(rng.random((64, 64)) < 0.03, iterations=2)
    blob = speckles & (xx > 15) & (xx < 40) & (yy > 15) & (yy < 40)
    pixels[blob] = COLORS["blue"]
    ell = (abs(xx - 50) < 8) & (abs(yy - 50) < 8) & ~((xx > 50) & (yy > 50))  # an L
    pixels[ell] = COLORS["green"]
    assert all(d.score < 0.3 for d in detect(pixels))
    assert detect(np.full((64, 64, 3), BACKGROUND_RGB, np.uint8)) == []


def test_detector_speed() -> None:
    import time

    images = [render_array(s) for s in random_scenes(23, 100, 64)]
    for image in images:
        detect(image)  # warm the template caches
    start = time.perf_counter()
    for image in images:
        detect(image)
    assert (time.perf_counter() - start) / len(images) < 5e-3


@pytest.mark.parametrize("image_size, cell, stride", [(40, 10, 1), (48, 12, 1), (80, 10, 2)])
def test_cell_layout_puts_each_object_centred_in_its_own_cell(
    sets: dict, image_size: int, cell: int, stride: int
) -> None:
    rng = np.random.default_rng(17)
    seen_cells = set()
    for record in sets["geneval"]["test"] + sets["geneval"]["train"][::5]:
        scene = P.scene_for_metadata(record, rng, image_size, Layout(cell, stride))
        assert scene_satisfies(scene, record), record
        cells = []
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            side = x1 - x0
            assert side == y1 - y0 and side <= cell
            assert x0 % cell == y0 % cell == (cell - side) // 2, obj.box
            cells.append((x0 // cell, y0 // cell))
            assert cells[-1][0] % stride == cells[-1][1] % stride == 0, "objects only on the lattice"
        assert len(set(cells)) == len(cells)
        seen_cells.update(cells)
        detected = sorted((d.class_name, d.color) for d in detect(render_array(scene)))
        assert detected == sorted((o.shape, o.color) for o in scene.objects), record
    assert len(seen_cells) == (image_size // cell // stride) ** 2  # every place of the lattice gets used


def test_cell_layout_rejects_objects_larger_than_the_cell() -> None:
    with pytest.raises(ValueError, match="do not fit in layout cells of 10 px"):
        sample_scene(np.random.default_rng(0), [("circle", "red")], 40, size_range=(10, 12), layout=Layout(10))


def test_cells_signs_put_each_character_in_its_own_token_slot() -> None:
    """``world.text_layout: cells``: the sign is centred on the 10 px grid and character i is the
    same glyph in slot i whatever surrounds it (monospaced, token-aligned), nothing outside."""
    from star.world.render import TEXT_SLOT, cell_sign_box

    layout, size, cell = Layout(10, 2, "cells"), 80, 10
    width, height = TEXT_SLOT[0] * cell, TEXT_SLOT[1] * cell
    for text in ["K7", "A3X", "7"]:
        scene = sample_sign_scene(np.random.default_rng(0), text, size, layout)
        assert scene.sign_box == cell_sign_box(len(text), size, cell)
        x0, y0, x1, y1 = scene.sign_box
        assert (x0 + cell // 2) % cell == 0 and (y0 + cell // 2) % cell == 0, "slots start on the token grid"
        assert abs((x0 + x1) / 2 - size / 2) <= cell, "centred to the nearest cell"
        ink = np.all(render_array(scene) == COLORS["black"], axis=-1)
        for i, char in enumerate(text):
            slot = (slice(y0 + cell // 2, y0 + cell // 2 + height),
                    slice(x0 + cell // 2 + i * width, x0 + cell // 2 + (i + 1) * width))
            alone = sample_sign_scene(np.random.default_rng(1), char, size, layout)
            ax0, ay0 = alone.sign_box[0] + cell // 2, alone.sign_box[1] + cell // 2
            alone_ink = np.all(render_array(alone) == COLORS["black"], axis=-1)[ay0:ay0 + height, ax0:ax0 + width]
            assert ink[slot].sum() > 20 and np.array_equal(ink[slot], alone_ink), (text, char)
        outside = ink.copy()
        outside[y0 + cell // 2: y0 + cell // 2 + height, x0 + cell // 2: x0 + cell // 2 + len(text) * width] = False
        assert not outside.any()
    with pytest.raises(ValueError, match="do not fit"):
        cell_sign_box(4, size, cell)


def test_world_text_sets_the_ocr_strings_and_the_pretraining_mixture() -> None:
    text = P.SignText("ACE3", ((2, 1.0), (3, 1.0)))
    records = P.generate_prompt_sets(0, 40, 20, text=text)["ocr"]
    strings = [r["text"] for split in records.values() for r in split]
    assert set("".join(strings)) <= set("ACE3") and {len(s) for s in strings} == {2, 3}
    rng = np.random.default_rng(0)
    families = [P.sample_training_scene(rng, 80, Layout(10, 2, "cells"), text, {"ocr": 1.0})[2] for _ in range(8)]
    assert all(m["tag"] == "ocr" and set(m["text"]) <= set("ACE3") for m in families)
    assert P.generate_prompt_sets(0, 40, 20) == P.generate_prompt_sets(0, 40, 20, text=P.SignText()), "defaults"


@pytest.mark.slow
def test_rapidocr_reads_cells_signs_of_the_world_test_prompts() -> None:
    """The ceiling the OCR task needs (issue: ground truth read >= 0.95)."""
    from rewards.ocr import OcrReward

    text = P.SignText("ACEHKLMNPRTX3479", ((2, 1.0), (3, 1.0)))
    records = P.generate_prompt_sets(0, 6, 60, text=text)["ocr"]["test"]
    images = P.render_records(records, 80, np.random.default_rng(0), Layout(10, 2, "cells"))
    import torch

    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    results = OcrReward().evaluate(batch, [r["prompt"] for r in records], records)
    assert np.mean([r.exact for r in results]) >= 0.95


@pytest.mark.slow
def test_the_ocr_reward_locates_cells_signs_where_they_are_drawn() -> None:
    """Map localisation on OCR prompts: the boxes RapidOCR reads text in (mapped back from its
    upscaled input) lie on the rendered sign's slots."""
    import torch

    from rewards.base import can_locate, score_and_locate
    from rewards.ocr import OcrReward
    from star.world.render import cell_sign_box

    text = P.SignText("ACEHKLMNPRTX3479", ((2, 1.0), (3, 1.0)))
    records = P.generate_prompt_sets(0, 6, 12, text=text)["ocr"]["test"]
    images = P.render_records(records, 80, np.random.default_rng(0), Layout(10, 2, "cells"))
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    reward = OcrReward()
    assert can_locate(reward)
    scores, boxes = score_and_locate(reward, batch, [r["prompt"] for r in records], records)
    torch.testing.assert_close(scores, reward.score(batch, [r["prompt"] for r in records], records))
    for record, found in zip(records, boxes):
        x0, y0, x1, y1 = cell_sign_box(len(record["text"]), 80, 10)
        assert len(found) >= 1, record
        for bx0, by0, bx1, by1 in found:  # inside the sign (its half-cell margin plus a few px of slack)
            assert x0 - 4 <= bx0 < bx1 <= x1 + 4 and y0 - 4 <= by0 < by1 <= y1 + 4, (record, found)
