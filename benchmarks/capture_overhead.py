"""STAR's overhead, measured side by side in one run on the same batch (docs/method.md §3.2).

    python benchmarks/capture_overhead.py [--repeats 5] [--params params.yaml]

Times, in one run and on the same batch: (a) a rollout of the training batch with and without
attention capture and (b) the update (advantages, allocation maps, inner-epoch minibatch steps)
of allocation `none` and `star` on those same rollouts, with rewards spread inside every group
so that both update every rollout (sparse real rewards would make the comparison a lottery of
which groups carry signal). An iteration is rollout + scoring + update; the two algorithms are
alternated in each repeat so that machine noise hits both alike, and the medians and their
ratios are printed. Uses the trained embedded base model when `models/base` exists.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rewards.geneval import GenEvalReward
from star.config import load_config
from star.models.sd3 import build_mini_sd3, pipeline_for
from star.rl.prompt_source import Record
from star.rl.trainer import Trainer
from star.sampling.rollout import Rollouts, sample_rollouts
from star.world.detector import detect
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
    return Trainer(cfg, pipe, GenEvalReward(detect), records, work / allocation, progress=False)


def time_score(trainer: Trainer, rollouts: Rollouts) -> float:
    start = time.perf_counter()
    trainer.reward.score(rollouts.images, rollouts.prompts, rollouts.records)
    return time.perf_counter() - start


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


def time_update(trainer: Trainer, rollouts: Rollouts, rewards: torch.Tensor) -> float:
    """Seconds of the update step of the loop (advantages → maps → minibatch steps)."""
    start = time.perf_counter()
    trainer.update(rollouts, trainer.objective.prepare(rollouts, rewards))
    return time.perf_counter() - start


def spread_rewards(rollouts: Rollouts) -> torch.Tensor:
    """(B,) rewards 0, 1/(G-1), ..., 1 inside every group: every group carries signal."""
    position = torch.cat([torch.arange(int(n)) for n in torch.bincount(rollouts.group_ids)]).float()
    return position / position.max().clamp_min(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        none, star = make_trainer(args.params, "none", Path(tmp)), make_trainer(args.params, "star", Path(tmp))
        records = star.prompts.next(star.train_cfg.prompts_per_iteration)
        rollouts = star.sample(records)  # with attention, so `star` can build its maps
        rewards = spread_rewards(rollouts)
        times: dict[str, list[float]] = {k: [] for k in ("rollout", "rollout+capture", "score",
                                                         "update none", "update star")}
        for repeat in range(args.repeats + 1):  # the first round warms up and is dropped
            measured = {
                "rollout": time_rollout(star, records, capture=False),
                "rollout+capture": time_rollout(star, records, capture=True),
                "score": time_score(star, rollouts),
                "update none": time_update(none, rollouts, rewards),
                "update star": time_update(star, rollouts, rewards),
            }
            if repeat:
                for key, value in measured.items():
                    times[key].append(value)
    median = {k: statistics.median(v) for k, v in times.items()}
    batch = star.train_cfg.prompts_per_iteration * star.train_cfg.group_size
    print(f"batch {batch} rollouts x {star.train_cfg.steps} steps, {args.repeats} repeats, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| measurement | median seconds |\n|---|---:|")
    for key, value in median.items():
        print(f"| {key} | {value:.3f} |")
    iteration_none = median["rollout"] + median["score"] + median["update none"]
    iteration_star = median["rollout+capture"] + median["score"] + median["update star"]
    print(f"\nrollout with capture / without: {median['rollout+capture'] / median['rollout']:.3f}")
    print(f"update star / none: {median['update star'] / median['update none']:.3f}")
    print(f"training iteration star / none: {iteration_star / iteration_none:.3f} "
          f"({iteration_star:.3f} s vs {iteration_none:.3f} s)")


if __name__ == "__main__":
    main()
