"""Builds the configured reward: the task's own, or a weighted mix of several.

Backends are imported inside their branch, so a run only loads (and needs) what it uses.

A mix's components and caveat: ``rewards.mix``.
"""

from __future__ import annotations

from pathlib import Path

from rewards.base import Reward
from rewards.mix import WeightedReward
from star.config import RewardsConfig


def _build_one(name: str, cfg: RewardsConfig, reward_models_dir: Path) -> Reward:
    """One reward by name, its backend chosen by ``cfg``."""
    if name == "geneval":
        from rewards.geneval import GenEvalReward

        if cfg.geneval_detector == "world":
            from star.world.detector import detect
            from star.world.vocab import SHAPES

            return GenEvalReward(detect, cfg.geneval_partial_credit, classes=SHAPES)
        from rewards.mask2former import mask2former_detector

        detector = mask2former_detector(cfg.detector_model, cfg.color_model, cfg.device)
        return GenEvalReward(detector, partial_credit=cfg.geneval_partial_credit)
    if name == "ocr":
        from rewards.ocr import OcrReward

        return OcrReward(cfg.ocr_backend, cfg.easyocr_model_dir)
    if name == "pickscore":
        from rewards.pickscore import PickScoreReward

        model: str | Path = reward_models_dir / "world_clip"  # the embedded stand-in holds both
        processor: str | Path = model
        hint = "build it with `dvc repro reward_models` or fetch it with `dvc pull models/rewards`"
        if cfg.pickscore_source == "pretrained":
            model, processor, hint = cfg.pickscore_model, cfg.pickscore_processor, None
        return PickScoreReward(model, processor, device=cfg.device, missing_hint=hint)
    raise ValueError(f"unknown reward {name!r}; expected 'geneval', 'ocr' or 'pickscore'")


def build_reward(cfg: RewardsConfig, reward_models_dir: Path) -> Reward:
    """The task's reward, or a ``WeightedReward`` over ``cfg.weights`` when that is set.

    ``reward_models_dir`` is ``PathsConfig.reward_models`` (holds the embedded world CLIP).
    """
    if cfg.weights is None:
        return _build_one(cfg.task, cfg, reward_models_dir)
    if not cfg.weights:
        raise ValueError("rewards.weights is an empty mapping; use null for the task's own reward")
    rewards = {name: _build_one(name, cfg, reward_models_dir) for name in cfg.weights}
    return WeightedReward(rewards, dict(cfg.weights))
