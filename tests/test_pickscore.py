"""PickScore reward through the real loading path; the world CLIP stand-in trained, saved and
reloaded through it; the reward_models stage on the micro config."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from rewards.hub import ModelLoadError
from rewards.pickscore import PickScoreReward
from star.config import RewardsConfig, WorldClipConfig
from star.models.sd3 import build_world_tokenizer
from star.rl import checkpoint
from star.scoring import build_reward
from star.world.clip import (
    build_world_clip,
    contrastive_loss,
    heldout_accuracy,
    heldout_set,
    normalise,
    train_world_clip,
)
from star.world.prompts import is_test_combination
from tests.conftest import MICRO, micro_overrides

WORDS = ["a", "photo", "of", "red", "blue", "circle", "square", "and", "sign", "says"]
PROMPTS = ["a red circle", "a blue square", 'a sign says "K7"', "a photo of a red square and a blue circle", "a"]
TINY_CLIP = WorldClipConfig(width=16, layers=1, heads=2, patch_size=8, projection_dim=16, steps=4, batch_size=8,
                            dataset_size=64, eval_size=32)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random CLIPModel + CLIPProcessor whose preprocessing really resizes and crops
    (36x44 images -> shortest edge 24 -> centre 16x16), saved with save_pretrained."""
    path = tmp_path_factory.mktemp("tiny_clip")
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=8)
    tokenizer = build_world_tokenizer(WORDS, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 16, kind="clip")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=16, eos_token_id=3, **tower),
        vision_config=dict(image_size=16, patch_size=4, **tower), projection_dim=8, logit_scale_init_value=3.0,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    images = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 16, "width": 16})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return path


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, 36, 44), generator=torch.Generator().manual_seed(seed))


def test_score_is_logit_scale_times_cosine(tiny_clip_dir: Path) -> None:
    reward = PickScoreReward(tiny_clip_dir, tiny_clip_dir)
    images = _images(len(PROMPTS))
    scores = reward.score(images, PROMPTS, [{}] * len(PROMPTS))
    assert scores.shape == (len(PROMPTS),) and scores.dtype == torch.float32
    assert reward.logit_scale == pytest.approx(torch.tensor(3.0).exp().item())
    # independently: the processor and CLIPModel's own forward, whose logits are scale * cosine
    model, processor = CLIPModel.from_pretrained(tiny_clip_dir), CLIPProcessor.from_pretrained(tiny_clip_dir)
    pil = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in (images * 255).round().to(torch.uint8)]
    inputs = processor(text=PROMPTS, images=pil, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.diagonal()
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    assert inputs["pixel_values"].shape[-2:] == (16, 16)
    assert scores.std() > 0


def test_scores_do_not_depend_on_batching(tiny_clip_dir: Path) -> None:
    images, metadata = _images(len(PROMPTS), seed=1), [{}] * len(PROMPTS)
    whole = PickScoreReward(tiny_clip_dir, tiny_clip_dir, batch_size=32).score(images, PROMPTS, metadata)
    pieces = PickScoreReward(tiny_clip_dir, tiny_clip_dir, batch_size=2).score(images, PROMPTS, metadata)
    torch.testing.assert_close(whole, pieces, rtol=1e-5, atol=1e-5)
    alone = PickScoreReward(tiny_clip_dir, tiny_clip_dir).score(images[3:4], PROMPTS[3:4], metadata[3:4])
    torch.testing.assert_close(alone, whole[3:4], rtol=1e-5, atol=1e-5)


def test_bad_batches_fail_clearly_and_empty_is_empty(tiny_clip_dir: Path) -> None:
    reward = PickScoreReward(tiny_clip_dir, tiny_clip_dir)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reward.score(torch.rand(2, 36, 44), ["a", "a"], [{}, {}])
    with pytest.raises(ValueError, match="batch sizes differ"):
        reward.score(_images(2), ["a"], [{}, {}])
    nan = _images(2)
    nan[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        reward.score(nan, ["a", "a"], [{}, {}])
    empty = reward.score(torch.empty(0, 3, 36, 44), [], [])
    assert empty.shape == (0,) and reward._model is None  # nothing to score: nothing loaded


def test_missing_model_names_it_and_what_to_do(tiny_clip_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_pickscore"
    with pytest.raises(ModelLoadError,
                       match=r"PickScore model: .*no_such_pickscore does not exist .*rewards\.pickscore_model"):
        PickScoreReward(missing, tiny_clip_dir).score(_images(1), ["a"], [{}])
    with pytest.raises(ModelLoadError, match=r"PickScore processor: .*no_such_pickscore does not exist"):
        PickScoreReward(tiny_clip_dir, missing).score(_images(1), ["a"], [{}])
    embedded = build_reward(RewardsConfig(task="pickscore"), tmp_path / "models" / "rewards")
    with pytest.raises(ModelLoadError, match=r"world_clip does not exist .*`dvc repro reward_models`"):
        embedded.score(_images(1), ["a"], [{}])


def test_contrastive_loss_treats_repeated_captions_as_positives() -> None:
    logits = torch.tensor([[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [0.0, 0.0, 5.0]], requires_grad=True)
    loss, accuracy = contrastive_loss(logits, torch.tensor([7, 7, 2]))
    (repeated,) = torch.autograd.grad(loss, logits)
    loss, distinct_accuracy = contrastive_loss(logits, torch.tensor([7, 8, 2]))
    (distinct,) = torch.autograd.grad(loss, logits)
    # two images of one caption matching it equally is optimal; with distinct captions it is pushed apart
    assert repeated.abs().max() < 0.01 < distinct[0, 1]
    assert accuracy == 1.0 and distinct_accuracy == pytest.approx(2 / 3)


def test_world_clip_trains_deterministically_resumes_and_loads_as_pickscore(tmp_path: Path, monkeypatch) -> None:
    reference = train_world_clip(TINY_CLIP, 32, seed=3, work_dir=tmp_path / "a", checkpoint_every=2)

    real_save = checkpoint.atomic_save

    def save_then_die(obj, path):  # an interruption right after the step-2 checkpoint
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_world_clip(TINY_CLIP, 32, seed=3, work_dir=tmp_path / "b", checkpoint_every=2)
    monkeypatch.setattr(checkpoint, "atomic_save", real_save)
    resumed = train_world_clip(TINY_CLIP, 32, seed=3, work_dir=tmp_path / "b", checkpoint_every=2)
    fresh = build_world_clip(TINY_CLIP, 32, seed=3).model.state_dict()
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    assert any(not torch.equal(fresh[n], v) for n, v in reference.model.state_dict().items()), "nothing trained"

    reference.save_pretrained(tmp_path / "world_clip")
    reward = PickScoreReward(tmp_path / "world_clip", tmp_path / "world_clip")
    images, captions, keys = heldout_set(TINY_CLIP.eval_size, 32, seed=0)
    scores = reward.score(images[:8], captions[:8], [{}] * 8)
    # the training path (normalise, full-length tokens) and the reward path agree
    tokens = reference.processor.tokenizer(captions[:8], padding="max_length", max_length=32, return_tensors="pt")
    pixels = normalise((images[:8] * 255).round().to(torch.uint8), reference.processor)
    with torch.no_grad():
        trained = reference.model(pixel_values=pixels, input_ids=tokens["input_ids"],
                                  attention_mask=tokens["attention_mask"]).logits_per_image.diagonal()
    torch.testing.assert_close(scores, trained, rtol=1e-4, atol=1e-4)
    assert 0.0 <= heldout_accuracy(reward, images, captions, keys) <= 1.0


def test_heldout_set_holds_only_unseen_combinations() -> None:
    images, captions, keys = heldout_set(64, 32, seed=0)
    assert images.shape == (64, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert len(set(captions)) == 64 and all(is_test_combination(k) for k in keys)


def test_reward_models_stage_on_micro_config(prefect_server, tmp_path: Path) -> None:
    from pipelines.reward_models import reward_models

    overrides = micro_overrides(tmp_path)
    overrides["rewards"] = {"world_clip": TINY_CLIP.model_dump()}
    metrics = reward_models(params=str(MICRO), overrides=overrides)
    assert json.loads((tmp_path / "metrics" / "reward_models.json").read_text()) == metrics
    assert 0.0 <= metrics["world_clip_heldout_top1"] <= 1.0 and metrics["train_seconds"] > 0
    # the OCR task's ceiling: the backend on the world's own signs of the 6 OCR test prompts
    assert 0.5 <= metrics["ocr_ground_truth_exact"] <= 1.0 and 0.0 <= metrics["ocr_ground_truth_edit_distance"] <= 0.5
    # saved where the reward registry (what training uses) reads it
    reward = build_reward(RewardsConfig(task="pickscore"), tmp_path / "models" / "rewards")
    assert reward.score(torch.rand(2, 3, 32, 32), ["a red circle", "a star"], [{}, {}]).isfinite().all()
    assert not (tmp_path / "outputs" / "reward_models").exists(), "spent checkpoints and their folder are removed"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = mlflow.search_runs(experiment_names=["star"], output_format="list")
    assert run.data.tags["stage"] == "reward_models"
    assert run.data.params["rewards.world_clip.steps"] == "4"
    assert run.data.metrics["world_clip_heldout_top1"] == pytest.approx(metrics["world_clip_heldout_top1"])
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "world_clip/loss")) >= 1
