"""Within-prompt spread of each reward on the base model's samples of TRAINING prompts: the scale
that sets a reward mix's weights (`rewards.weights`, docs/method.md §10).

Usage: ``python benchmarks/reward_spread.py [--params params.yaml] [--prompts 16] [--tasks ocr pickscore]``.
Samples the first ``--prompts`` training prompts of each task with the evaluation's noises and
sampler (``eval`` section: ``eval.noises`` per prompt), scores them with the task's reward, and
prints per task the mean reward and the mean over prompts of the standard deviation across a
prompt's noises, then the ratio of the first task's spread to each other's. Group-relative
advantages (§2) see only within-prompt differences, so equal spreads give the terms of a mix
equal say. Training prompts, never the test prompts: the weights must not be read off the
evaluation set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from star.config import load_config  # noqa: E402
from star.evaluation.evaluate import TASK_EVALUATORS  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts  # noqa: E402
from star.scoring import build_reward  # noqa: E402

SCORE_COLUMN = {"geneval": "correct", "ocr": "reward", "pickscore": "score"}
"""The per-image column of each task's evaluation rows that stands for its reward. GenEval's is the
strict verdict, which equals the training reward only with ``rewards.geneval_partial_credit`` off."""


def spread(params: str, tasks: list[str], prompts: int) -> pd.DataFrame:
    """One row per task: mean reward and mean within-prompt std over ``prompts`` training prompts."""
    cfg = load_config(params)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    rows = []
    for task in tasks:
        reward = build_reward(cfg.rewards.for_task(task), cfg.paths.reward_models)
        records = load_task_prompts(cfg.paths.prompts, task, "train")[:prompts]
        scores = pd.DataFrame(TASK_EVALUATORS[task](pipe, records, cfg.eval, reward, progress=False).rows)
        column = scores[SCORE_COLUMN[task]].astype(float)
        rows.append({"task": task, "prompts": len(records), "noises": cfg.eval.noises, "mean": column.mean(),
                     "within-prompt std": column.groupby(scores["prompt_index"]).std().mean()})
    return pd.DataFrame(rows).set_index("task")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prompts", type=int, default=16, help="training prompts per task")
    parser.add_argument("--tasks", nargs="+", default=["ocr", "pickscore"], choices=sorted(TASK_EVALUATORS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = spread(args.params, args.tasks, args.prompts)
    print(table.to_markdown(floatfmt=(".0f", ".0f", ".0f", ".4f", ".4f")))
    first = table.index[0]
    for task in table.index[1:]:
        spread_of_task = table.loc[task, "within-prompt std"]
        if spread_of_task > 0:
            ratio = f"{table.loc[first, 'within-prompt std'] / spread_of_task:.4f}"
        else:
            ratio = f"undefined ({task} does not vary within a prompt)"
        print(f"\nweight of {task} for equal spread with {first} at weight 1: {ratio}")


if __name__ == "__main__":
    main()
