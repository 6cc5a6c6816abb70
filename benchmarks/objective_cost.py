"""The cost of one training iteration of each algorithm, side by side in one run: Flow-GRPO
(``none``), STAR, FDFO, DiffusionNFT and DGPO on the same config, base weights and prompts.

    python benchmarks/objective_cost.py [--iterations 2] [--passes 2] [--params params.yaml] [-S key=value ...]
        [--row 'name={algorithm: nft, allocation: none}']

Each row is a fresh trainer (one warm-up iteration, then the mean of ``--iterations``; every row
once per pass, ``--passes`` passes averaged), timed in
place: sample (the row's sampler: SDE with log-probs, or the ODE of the forward-process
objectives; with attention capture where the row allocates), score, advantages (+ maps, + the
drawn timesteps and noise), update. Prints seconds per phase, rollouts per second and each row's
cost relative to the first row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.profile_study import timed  # noqa: E402
from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from scripts.diagnose_rl import parse_rows, with_row  # noqa: E402
from scripts.learning_curves import ROWS as CURVE_ROWS  # noqa: E402
from star.config import load_config  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts  # noqa: E402
from star.rl.trainer import Trainer  # noqa: E402
from star.scoring import build_reward  # noqa: E402

ROWS: dict[str, dict[str, Any]] = {
    "none (Flow-GRPO)": CURVE_ROWS["none"], "star": CURVE_ROWS["star"], "fdfo": CURVE_ROWS["fdfo"],
    "nft": CURVE_ROWS["nft"], "nft star": CURVE_ROWS["nft"] | {"allocation": "star"},
    "dgpo": CURVE_ROWS["dgpo"], "dgpo star": CURVE_ROWS["dgpo"] | {"allocation": "star"},
}
PHASES = ("sample", "score", "advantages", "update")


def measure(cfg: Any, pipe_for: Any, reward: Any, records: list, iterations: int) -> dict[str, float]:
    """Mean seconds per phase of ``iterations`` iterations after one warm-up (fresh weights)."""
    seconds: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(cfg, pipe_for(), reward, records, Path(work), progress=False)
        trainer.sample = timed(seconds, "sample", trainer.sample)
        trainer.score = timed(seconds, "score", trainer.score)
        trainer.update = timed(seconds, "update", trainer.update)
        trainer.objective.prepare = timed(seconds, "advantages", trainer.objective.prepare)
        trainer.step()
        seconds.clear()
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.step()
        seconds["total"] = time.perf_counter() - start
    return {k: v / iterations for k, v in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per row and pass")
    parser.add_argument("--passes", type=int, default=2, help="passes over all rows, averaged")
    parser.add_argument("--rows", nargs="+", default=None, help=f"default rows ({', '.join(ROWS)})")
    parser.add_argument("--row", action="append", default=[], metavar="NAME={...}", help="add a row")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, parse_overrides(args.set))
    rows = {name: ROWS[name] for name in (args.rows or ROWS)} | parse_rows(args.row)
    use_threads(cfg)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    configs = {name: with_row(cfg, overrides, name) for name, overrides in rows.items()}
    # every row once per pass, the passes averaged: a drift of the machine's speed reaches every row alike
    passes: dict[str, list[dict[str, float]]] = {name: [] for name in rows}
    for number in range(args.passes):
        for name, row_cfg in configs.items():
            passes[name].append(measure(row_cfg, lambda c=row_cfg: pipeline_for(c.model, c.paths.base_model),
                                        reward, records, args.iterations))
            print(f"pass {number + 1}, {name}: {passes[name][-1]['total']:.1f} s per iteration", file=sys.stderr,
                  flush=True)
    results = {name: {key: sum(m[key] for m in runs) / len(runs) for key in runs[0]} for name, runs in passes.items()}
    rollouts = cfg.train.prompts_per_iteration * cfg.train.group_size
    first = next(iter(results.values()))["total"]
    print(f"\nOne training iteration, {rollouts} rollouts ({cfg.train.steps} steps), mean of {args.iterations} "
          f"after a warm-up in each of {args.passes} passes over the rows, {torch_threads()} torch threads:\n")
    print("| row | " + " | ".join(f"{p} s" for p in PHASES) + " | total s | rollouts/s | cost vs first |")
    print("|---|" + "---:|" * (len(PHASES) + 3))
    for name, s in results.items():
        cells = " | ".join(f"{s.get(p, 0.0):.2f}" for p in PHASES)
        print(f"| {name} | {cells} | {s['total']:.2f} | {rollouts / s['total']:.1f} | {s['total'] / first:.2f}x |")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
