"""The Mask2Former + CLIP GenEval detector on tiny random models saved and loaded by path.

Random weights test the plumbing (loading, preprocessing, post-processing, crops, batching,
thresholds, the reward end to end), not detection or colour quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessorPil

from rewards.detection import Detection
from rewards.geneval import GenEvalReward
from rewards.geneval_rules import COLORS, THRESHOLD
from rewards.hub import ModelLoadError
from rewards.mask2former import (
    BACKGROUND,
    Mask2FormerColorDetector,
    instances_from_logits,
    mask2former_detector,
    mask_to_box,
    masked_crop,
    resized_shape,
)
from tests.tiny_models import TINY_LABELS, save_tiny_detector

LABELS = TINY_LABELS
SCALE = (48, 96)  # tiny inputs: 40x56 images become 48x67, padded to 64x96


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Paths of a tiny Mask2Former (biased towards 'dog') and a tiny CLIP, saved as on the hub."""
    return save_tiny_detector(tmp_path_factory.mktemp("m2f"))


@pytest.fixture(scope="module")
def detector(models: tuple[str, str]) -> Mask2FormerColorDetector:
    """One loaded detector shared by the tests (loading is the slow part on a busy CPU)."""
    loaded = Mask2FormerColorDetector(*models, scale=SCALE)
    loaded.load()
    return loaded


def images(count: int, height: int = 40, width: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def key(d: Detection) -> tuple:
    return d.class_name, d.box, d.color, d.mask.tobytes()  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ helpers


def test_mask_to_box_is_the_exclusive_extent() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    mask[7, 4] = True
    assert mask_to_box(mask) == (3.0, 2.0, 9.0, 8.0)
    with pytest.raises(ValueError, match="non-empty"):
        mask_to_box(np.zeros((4, 4), dtype=bool))


def test_masked_crop_greys_everything_outside_the_mask() -> None:
    image = np.random.default_rng(0).integers(0, 100, (10, 12, 3), dtype=np.uint8)
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    mask[3, 3] = False
    crop = masked_crop(image, mask, mask_to_box(mask))
    assert crop.shape == (3, 6, 3) and crop.dtype == np.uint8
    inside = mask[2:5, 3:9]
    assert (crop[inside] == image[2:5, 3:9][inside]).all()
    assert (crop[~inside] == BACKGROUND).all() and BACKGROUND == 0x99


def test_resized_shape_follows_mmdet_keep_ratio() -> None:
    assert resized_shape(512, 512, (800, 1333)) == (800, 800)
    assert resized_shape(480, 640, (800, 1333)) == (800, 1067)
    assert resized_shape(1000, 3000, (800, 1333)) == (444, 1333)


def test_instances_from_hand_built_logits() -> None:
    """Scores are class probability x mean sigmoid in the mask; the padded rows are cropped."""
    mask_logits = torch.full((3, 8, 8), -4.0)
    mask_logits[0, 1:3, 2:6] = 4.0
    mask_logits[0, 6:, :] = 4.0  # padding: outside the valid 4x8 region
    class_logits = torch.tensor([[0.0, 3.0, 0.0], [3.0, 0.0, 0.0], [0.5, 0.0, 0.0]])  # query 1: empty mask
    found = instances_from_logits(class_logits, mask_logits, (8, 8), (4, 8), (4, 8), min_score=0.3)
    assert len(found) == 1
    label, score, mask = found[0]
    expected = torch.zeros(4, 8, dtype=torch.bool)
    expected[1:3, 2:6] = True
    assert label == 1 and torch.equal(mask, expected)
    assert score == pytest.approx(float(class_logits[0].softmax(0)[1] * torch.sigmoid(torch.tensor(4.0))), rel=1e-5)
    # a lower threshold keeps the weak pairs with non-empty masks; the output size is `original`
    low = instances_from_logits(class_logits, mask_logits, (8, 8), (4, 8), (8, 16), min_score=0.0)
    assert [f[1] for f in low] == sorted((f[1] for f in low), reverse=True) and len(low) == 2
    assert all(f[2].shape == (8, 16) for f in low)
    assert instances_from_logits(class_logits, mask_logits, (8, 8), (4, 8), (4, 8), 0.0, max_per_image=1)[0][0] == 1


# ------------------------------------------------------------------------------ detector


def test_loads_by_path_and_returns_detections_inside_the_image(detector: Mask2FormerColorDetector) -> None:
    for image in images(2):
        detections = detector(image)
        assert detections and all(isinstance(d, Detection) for d in detections)
        scores = [d.score for d in detections]
        assert scores == sorted(scores, reverse=True) and min(scores) > THRESHOLD
        for d in detections:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 40
            assert d.mask is not None and d.mask.shape == (40, 56) and d.mask.dtype == bool
            assert d.box == mask_to_box(d.mask)
            assert d.class_name == "dog" and d.color in COLORS


def test_threshold_drops_only_low_scores(detector: Mask2FormerColorDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    image = images(1)[0]
    default = detector(image)
    monkeypatch.setattr(detector, "min_score", 0.0)
    everything = detector(image)
    assert {key(d) for d in default} < {key(d) for d in everything}
    assert [key(d) for d in everything if d.score > THRESHOLD] == [key(d) for d in default]
    assert {d.class_name for d in everything} - {"dog"}  # the weak classes appear below 0.3


def test_batch_equals_single_images(detector: Mask2FormerColorDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = images(3) + images(1, height=48, width=32, seed=1) + images(1, seed=2)
    monkeypatch.setattr(detector, "batch_size", 2)
    batched = detector.detect_batch(batch)
    single = [detector(image) for image in batch]
    assert len(batched) == 5 and batched[3][0].mask.shape == (48, 32)  # type: ignore[union-attr]
    for got, want in zip(batched, single):
        assert [key(d) for d in got] == [key(d) for d in want]
        assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=1e-5)


def test_preprocess_resizes_normalises_and_pads(
    detector: Mask2FormerColorDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    grey = np.full((2, 40, 56, 3), 255, dtype=np.uint8)
    pixels, valid = detector._preprocess(grey)
    assert valid == (48, 67) and pixels.shape == (2, 3, 64, 96)
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(pixels[:, :, :48, :67], white.view(1, 3, 1, 1).expand(2, 3, 48, 67), atol=1e-5)
    assert (pixels[:, :, 48:] == 0).all() and (pixels[..., 67:] == 0).all()
    monkeypatch.setattr(detector, "scale", None)  # the processor's own size (short edge 384)
    assert detector._preprocess(grey)[1] == (384, 538)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(models: tuple[str, str], detector: Mask2FormerColorDetector) -> None:
    batch = images(2)
    on_gpu = Mask2FormerColorDetector(*models, device="cuda", scale=SCALE).detect_batch(batch)
    for got, want in zip(on_gpu, detector.detect_batch(batch)):
        assert [(d.class_name, d.box) for d in got] == [(d.class_name, d.box) for d in want]
        assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=1e-3)


def test_colour_preprocessing_and_classifier(detector: Mask2FormerColorDetector) -> None:
    grey = np.full((10, 30, 3), BACKGROUND, dtype=np.uint8)  # wide crop: resized to 32x96, centre 32x32
    pixels = detector._clip_pixels(grey)
    mean, std = torch.tensor(CLIPImageProcessorPil().image_mean), torch.tensor(CLIPImageProcessorPil().image_std)
    assert pixels.shape == (3, 32, 32)
    assert torch.allclose(pixels, ((BACKGROUND / 255 - mean) / std).view(3, 1, 1).expand(3, 32, 32), atol=1e-5)
    dog, cat = detector._text_classifier("dog"), detector._text_classifier("cat")
    assert dog.shape == (len(COLORS), 8) and torch.allclose(dog.norm(dim=-1), torch.ones(len(COLORS)))
    assert not torch.allclose(dog, cat)  # the class name is in the prompts
    assert detector._classify_colors([(grey, "dog"), (grey, "cat")])[0] in COLORS


def test_bad_images_are_rejected(models: tuple[str, str]) -> None:
    detector = mask2former_detector(*models)
    with pytest.raises(ValueError, match=r"images\[0\].*\(40, 56\)"):
        detector(np.zeros((40, 56), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        detector(np.zeros((40, 56, 3), dtype=np.float32))


def test_missing_models_name_the_model(models: tuple[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    for paths, name in (((missing, models[1]), missing), ((models[0], missing), missing)):
        with pytest.raises(ModelLoadError, match="does not exist") as error:
            mask2former_detector(*paths)(images(1)[0])
        assert name in str(error.value)
    with pytest.raises(ModelLoadError, match="CLIP colour model"):
        mask2former_detector(models[0], missing).detect_batch(images(1))


def test_geneval_reward_end_to_end(detector: Mask2FormerColorDetector) -> None:
    batch = torch.from_numpy(np.stack(images(3))).permute(0, 3, 1, 2).float() / 255
    metadata = [
        {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"},
        {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
        {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"},
    ]
    partial = GenEvalReward(detector).score(batch, [m["prompt"] for m in metadata], metadata)
    strict = [r.correct for r in GenEvalReward(detector, partial_credit=False).evaluate(batch, metadata)]
    assert partial.shape == (3,) and strict[:2] == [True, False]
    dogs = detector(images(3)[0])  # all dogs above 0.3; partial credit wants exactly one
    assert ((0 <= partial) & (partial <= 1)).all() and partial[0] == max(0.0, 1.0 - abs(1 - len(dogs)))
    assert strict[2] == (detector(images(3)[2])[0].color == "red")
