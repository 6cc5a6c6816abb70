"""Where a training iteration's time goes: a few RL iterations of one variant of the default study,
timed by phase (sampling, scoring, update) and profiled with cProfile, on the committed base.

    python scripts/profile_training.py [--variant nft] [--iterations 3] [--top 30] [--params FILE] [-S key=value]

Prints seconds per iteration for each phase, then the profile's heaviest calls by cumulative time.
Checkpoints go to a temporary folder; nothing in the project is written.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.profile_study import timed  # noqa: E402
from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from star.config import load_config  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts  # noqa: E402
from star.rl.trainer import Trainer  # noqa: E402
from star.scoring import build_reward  # noqa: E402

PHASES = ["sample", "score", "update", "save_checkpoint"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="the config file")
    parser.add_argument("--variant", default="nft", help="variant of the default study")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--top", type=int, default=30, help="profile rows printed")
    parser.add_argument("-S", "--set", action="append", default=[], help="override, key=value")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set) | {"train": {"iterations": args.iterations}}
    cfg = load_config(args.params, overrides=overrides).for_variant(args.variant, args.seed)
    use_threads(cfg)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    trainer = Trainer(cfg, pipe, reward, records, Path(tempfile.mkdtemp(prefix="star-profile-")))
    seconds: dict[str, float] = defaultdict(float)
    for phase in PHASES:
        setattr(trainer, phase, timed(seconds, phase, getattr(trainer, phase)))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    trainer.train()
    profile.disable()
    total = time.perf_counter() - start
    n = args.iterations
    rollouts = cfg.train.prompts_per_iteration * cfg.train.group_size
    print(f"{args.variant}: {total / n:.2f} s per iteration ({rollouts} rollouts)")
    for phase in PHASES:
        print(f"  {phase:16s} {seconds[phase] / n:6.2f} s  ({seconds[phase] / total:5.1%})")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
