"""Throughput (images/second) of each reward backend available on CPU, as a markdown table.

Usage: ``python benchmarks/reward_throughput.py [--n 64] [--size 32] [--batch 16] [--seed 0]
[--reward-models models/rewards]``. Images are rendered world scenes of the reward's own task
(GenEval scenes for the world detector and PickScore, signs for OCR) at ``--size`` px; each
reward is built by ``build_reward`` and warmed up on one batch (model loading happens there)
before ``--n`` images are timed with ``time.perf_counter``. PickScore (the embedded world CLIP)
runs only when ``<reward-models>/world_clip`` exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rewards.base import Reward  # noqa: E402
from star.config import RewardsConfig  # noqa: E402
from star.scoring import build_reward  # noqa: E402
from star.world.prompts import geneval_pool, ocr_record, scene_for_metadata  # noqa: E402
from star.world.render import render_array  # noqa: E402
from star.world.vocab import GENEVAL_TASKS, MAX_TEXT_LEN, TEXT_CHARSET  # noqa: E402

Batch = tuple[torch.Tensor, list[str], list[dict[str, Any]]]


def world_batch(task: str, n: int, size: int, rng: np.random.Generator) -> Batch:
    """``n`` rendered scenes for ``task`` ('geneval' or 'ocr'): images (n, 3, size, size) in [0, 1]."""
    records = []
    for i in range(n):
        if task == "ocr":
            length = int(rng.integers(1, MAX_TEXT_LEN + 1))
            records.append(ocr_record("".join(rng.choice(list(TEXT_CHARSET), size=length))))
        else:
            pool = geneval_pool(GENEVAL_TASKS[i % len(GENEVAL_TASKS)], "train")
            records.append(pool[int(rng.integers(len(pool)))])
    arrays = [render_array(scene_for_metadata(r, rng, size)) for r in records]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    return images, [r["prompt"] for r in records], records


def throughput(reward: Reward, batch: Batch, batch_size: int) -> tuple[float, float]:
    """(seconds, images/second) of scoring ``batch`` in chunks of ``batch_size`` after a warm-up."""
    images, prompts, metadata = batch
    reward.score(images[:batch_size], prompts[:batch_size], metadata[:batch_size])  # loads models
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        reward.score(images[i : i + batch_size], prompts[i : i + batch_size], metadata[i : i + batch_size])
    seconds = time.perf_counter() - start
    return seconds, len(images) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="timed images per reward")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (embedded default 32)")
    parser.add_argument("--batch", type=int, default=16, help="images per score() call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward-models", type=Path, default=REPO / "models" / "rewards")
    args = parser.parse_args()

    runs = [("geneval", "world detector", RewardsConfig(task="geneval"), "geneval")]
    runs.append(("ocr", "rapidocr", RewardsConfig(task="ocr", ocr_backend="rapidocr"), "ocr"))
    if (args.reward_models / "world_clip").is_dir():
        runs.append(("pickscore", "world CLIP", RewardsConfig(task="pickscore"), "geneval"))
    else:
        print(f"note: {args.reward_models / 'world_clip'} not found, PickScore (world CLIP) skipped\n")

    print(f"{args.n} images of {args.size} px per reward, {args.batch} per call, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| reward | backend | images/s | ms/image |")
    print("|---|---|---:|---:|")
    for name, backend, cfg, task in runs:
        batch = world_batch(task, args.n, args.size, np.random.default_rng(args.seed))
        seconds, rate = throughput(build_reward(cfg, args.reward_models), batch, args.batch)
        print(f"| {name} | {backend} | {rate:.1f} | {1000 * seconds / args.n:.1f} |", flush=True)


if __name__ == "__main__":
    main()
