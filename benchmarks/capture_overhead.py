"""STAR's overhead, measured side by side in one run on the same batch (docs/method.md §3.2).

    python benchmarks/capture_overhead.py [--repeats 5] [--params params.yaml]

Times (a) a rollout of the training batch with and without attention capture and (b) a whole
training iteration (sample → score → advantages → update) with allocation `none` and `star`,
alternating the two in each repeat so that machine noise hits both alike, and prints the median
times and their ratios. Uses the trained embedded base model when `models/base` exists.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rewards.geneval import GenEvalReward, world_detector
from star.config import load_config
from star.models import build_mini_sd3, pipeline_for
from star.prompt_source import Record
from star.rollout import sample_rollouts
from star.trainer import Trainer
from star.world.prompts import generate_prompt_sets, vocabulary
from star.world.vocab import TEXT_CHARSET


def make_trainer(params: str, allocation: str, work: Path) -> Trainer:
    cfg = load_config(params, overrides={"train": {"allocation": allocation}})
    if (cfg.paths.base_model / "model_index.json").is_file():
        pipe = pipeline_for(cfg.model, cfg.paths.base_model)  # trained: rewards vary, so updates happen
    else:
        print(f"note: {cfg.paths.base_model} missing; an untrained model scores 0 and skips updates")
        pipe = build_mini_sd3(cfg.model.mini, vocabulary(), TEXT_CHARSET, cfg.world.image_size, seed=0)
    records: list[Record] = generate_prompt_sets(0, 40, 6)["geneval"]["train"]
    return Trainer(cfg, pipe, GenEvalReward(world_detector()), records, work / allocation, progress=False)


def time_rollout(trainer: Trainer, records: list[Record], capture: bool) -> float:
    """Seconds of one rollout of ``records`` × group, with or without the capture processors."""
    rollouts = trainer.sample(records)  # conditioning and masks as the trainer builds them
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    sample_rollouts(
        trainer.transformer, trainer.pipe.vae, rollouts.cond, rollouts.latents[:, 0], trainer.sigmas,
        trainer.train_cfg.noise_level, trainer.train_cfg.guidance_scale, generator,
        trainer.capture if capture else None, rollouts.core_mask if capture else None,
    )
    return time.perf_counter() - start


def time_iteration(trainer: Trainer) -> float:
    start = time.perf_counter()
    trainer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        none, star = make_trainer(args.params, "none", Path(tmp)), make_trainer(args.params, "star", Path(tmp))
        records = star.prompts.next(star.train_cfg.prompts_per_iteration)
        times: dict[str, list[float]] = {k: [] for k in ("rollout", "rollout+capture", "iteration none", "iteration star")}
        for repeat in range(args.repeats + 1):  # the first round warms up and is dropped
            measured = {
                "rollout": time_rollout(star, records, capture=False),
                "rollout+capture": time_rollout(star, records, capture=True),
                "iteration none": time_iteration(none),
                "iteration star": time_iteration(star),
            }
            if repeat:
                for key, value in measured.items():
                    times[key].append(value)
    median = {k: statistics.median(v) for k, v in times.items()}
    batch = star.train_cfg.prompts_per_iteration * star.train_cfg.group_size
    print(f"batch {batch} rollouts x {star.train_cfg.steps} steps, {args.repeats} repeats, torch threads {torch.get_num_threads()}\n")
    print("| measurement | median seconds |\n|---|---:|")
    for key, value in median.items():
        print(f"| {key} | {value:.3f} |")
    kept = {name: statistics.fmean(h["kept_fraction"] for h in t.history) for name, t in (("none", none), ("star", star))}
    print(f"\nrollouts kept for the update (groups with signal): none {kept['none']:.2f}, star {kept['star']:.2f}")
    print(f"rollout with capture / without: {median['rollout+capture'] / median['rollout']:.3f}")
    print(f"training iteration star / none: {median['iteration star'] / median['iteration none']:.3f}")


if __name__ == "__main__":
    main()
