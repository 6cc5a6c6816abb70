"""Diagnose a base model on ground-truth scenes (star/diagnostics/base_model.py).

Prints four markdown tables: the strict GenEval of ground-truth renders after the VAE's round
trip (single objects per colour, and the balanced GenEval training prompts): the ceiling the VAE
puts on every checkpoint; how much the x̂₀ prediction moves when the caption's shape word,
its colour word or the whole caption changes, per noise level; the strict GenEval score of
scenes noised to a sampler step and solved back to 0, per starting step; and the variance of
the GenEval training reward that each step's SDE noise causes (one training prompt per GenEval
tag, the `train` section's steps, noise level and CFG).

    python scripts/diagnose_base.py [--model models/base] [--per-shape 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusion3Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.geneval import GenEvalReward  # noqa: E402
from star.config import Config, load_config  # noqa: E402
from star.diagnostics.base_model import caption_sensitivity, commitment_curve, reward_variance_by_step, vae_round_trip  # noqa: E402
from star.evaluation.evaluate import balanced_subset  # noqa: E402
from star.models.sd3 import load_pipeline  # noqa: E402
from star.rl.prompt_source import load_task_prompts  # noqa: E402
from star.scoring import build_reward  # noqa: E402
from star.world.detector import detect  # noqa: E402
from star.world.prompts import colors_record, render_records  # noqa: E402
from star.world.render import world_layout  # noqa: E402
from star.world.vocab import COLORS, SHAPES  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/base", help="base model directory")
    parser.add_argument("--params", default="params.yaml", help="params file (eval steps, CFG)")
    parser.add_argument("--per-shape", type=int, default=8, help="scenes per shape class")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    pipe = load_pipeline(args.model)
    reward = GenEvalReward(detect, partial_credit=False)
    print_vae_ceiling(pipe, cfg, reward, args.per_shape)
    records = [colors_record(shape, "red") for shape in SHAPES for _ in range(args.per_shape)]
    images = rendered(records, pipe, cfg, np.random.default_rng(0))
    prompts = [r["prompt"] for r in records]
    other_shape = [p.replace(s, SHAPES[(SHAPES.index(s) + 3) % len(SHAPES)])
                   for p, s in zip(prompts, (r["include"][0]["class"] for r in records))]
    variants = {"shape word swapped": other_shape, "colour word swapped": [p.replace("red", "blue") for p in prompts],
                "empty caption": [""] * len(prompts)}
    table = caption_sensitivity(pipe, images, prompts, variants, sigmas=[0.9, 0.8, 0.7, 0.5])
    print("| s | x̂₀ error | " + " | ".join(f"change: {name}" for name in variants) + " |")
    print("|---" * (len(variants) + 2) + "|")
    for sigma, row in table.items():
        print(f"| {sigma} | {row['x0_mse']:.4f} | " + " | ".join(f"{row[name]:.4f}" for name in variants) + " |")
    steps = cfg.eval.steps
    curve = commitment_curve(
        pipe, images, prompts, lambda x: reward.score(x, prompts, records), steps, cfg.eval.guidance_scale,
        start_steps=sorted({min(steps - 1, round(f * steps)) for f in (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85)}),
    )
    print("\n| start s | strict GenEval after solving to 0 |\n|---|---|")
    for sigma, score in curve:
        print(f"| {sigma:.3f} | {score:.3f} |")
    print_reward_variance(pipe, cfg)


def rendered(records: list[dict], pipe: StableDiffusion3Pipeline, cfg: Config,
             rng: np.random.Generator) -> torch.Tensor:
    """(B, 3, H, W) ground-truth renders in [0, 1] of ``records`` at the VAE's size, in the world's layout."""
    pixels = render_records(records, pipe.vae.config.sample_size, rng, world_layout(cfg.world))
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255


def print_vae_ceiling(pipe: StableDiffusion3Pipeline, cfg: Config, reward: GenEvalReward, per_shape: int) -> None:
    """Strict GenEval of ground-truth renders, as drawn and after encode -> decode (method §0)."""
    rng = np.random.default_rng(1)

    def scores(records: list[dict]) -> tuple[float, float]:
        images = rendered(records, pipe, cfg, rng)
        prompts = [r["prompt"] for r in records]
        return tuple(reward.score(x, prompts, records).float().mean().item()
                     for x in (images, vae_round_trip(pipe.vae, images)))

    print("| ground truth | strict GenEval as drawn | after the VAE's round trip |\n|---|---|---|")
    for color in COLORS:
        drawn, round_trip = scores([colors_record(shape, color) for shape in SHAPES for _ in range(per_shape)])
        print(f"| one {color} object | {drawn:.3f} | {round_trip:.3f} |")
    records = balanced_subset(load_task_prompts(cfg.paths.prompts, "geneval", "train"), 16)
    drawn, round_trip = scores(records)
    print(f"| {len(records)} GenEval training prompts | {drawn:.3f} | {round_trip:.3f} |\n")


def print_reward_variance(pipe: StableDiffusion3Pipeline, cfg: Config) -> None:
    """Which steps' SDE noise decides the training reward (the steps worth training)."""
    records = {}
    for record in load_task_prompts(cfg.paths.prompts, "geneval", "train"):
        records.setdefault(record["tag"], record)
    train_reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    prompts = [r["prompt"] for r in records.values()]
    scorers = [lambda x, r=r: train_reward.score(x, [r["prompt"]] * len(x), [r] * len(x)) for r in records.values()]
    steps = cfg.train.steps
    table = reward_variance_by_step(pipe, prompts, scorers, steps, cfg.train.noise_level, cfg.train.guidance_scale,
                                    sde_steps=[None, *range(steps)])
    print("\n| SDE noise at step | reward variance from it |\n|---|---|")
    for k, variance in table.items():
        print(f"| {'every step' if k is None else k} | {variance:.4f} |")


if __name__ == "__main__":
    main()
