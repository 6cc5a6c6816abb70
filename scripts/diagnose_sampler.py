"""The evaluation sampler's share of a checkpoint's score, measured on *training* prompts (the
test set stays untouched): strict GenEval (or, with ``--task ocr``, OCR exact match / normalised
edit distance) per (CFG scale, ODE steps) setting, each at several noise seeds (docs/method.md
§0). With one setting it is how candidate bases are compared without looking at the test set.

    python scripts/diagnose_sampler.py [--settings 4.5:20 7:20 10:20 4.5:40 7:40] [--per-tag 16]
                                       [--seeds 11 12] [--task geneval|ocr] [--pool] [-S key=value]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from pipelines.evaluate import evaluation_reward  # noqa: E402
from star.config import load_config  # noqa: E402
from star.evaluation.evaluate import TASK_EVALUATORS, balanced_subset  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts, training_pool  # noqa: E402


def setting(text: str) -> tuple[float, int]:
    """'7:40' -> (7.0, 40)."""
    scale, _, steps = text.partition(":")
    try:
        return float(scale), int(steps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CFG:STEPS such as 4.5:20, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--settings", type=setting, nargs="+", default=[setting(s) for s in
                                                                        ("4.5:20", "7:20", "10:20", "4.5:40", "7:40")])
    parser.add_argument("--per-tag", type=int, default=16, help="training prompts per tag (OCR has one tag)")
    parser.add_argument("--task", choices=("geneval", "ocr"), default="geneval", help="the task scored")
    parser.add_argument("--pool", action="store_true",
                        help="score the prompts a training run draws (train.prompt_pool at `seed`) "
                             "instead of --per-tag")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12], help="noise seeds (x 1000)")
    parser.add_argument("--checkpoint", default="base", help="'base' or a trained variant directory name")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, parse_overrides(args.set))
    use_threads(cfg)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    if args.checkpoint != "base":
        from star.models.variants import load_variant

        load_variant(pipe, cfg.paths.checkpoints / args.checkpoint)
    reward = evaluation_reward(cfg, args.task)
    train_records = load_task_prompts(cfg.paths.prompts, args.task, "train")
    records = (training_pool(train_records, cfg.train.prompt_pool, cfg.train.pool_seed, cfg.seed) if args.pool
               else balanced_subset(train_records, args.per_tag))
    what = "strict GenEval" if args.task == "geneval" else "OCR exact match / normalised edit distance"
    print(f"{args.checkpoint}: {what} on {len(records)} training prompts, one noise per prompt and seed\n")
    print("| CFG | steps | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---:|---:|" + "---:|" * (len(args.seeds) + 1))
    for scale, steps in args.settings:
        scores = []
        for seed in args.seeds:
            sampler = cfg.eval.model_copy(update={"guidance_scale": scale, "steps": steps, "seed": seed * 1000,
                                                  "noises": 1})
            scores.append(score(TASK_EVALUATORS[args.task](pipe, records, sampler, reward, progress=False).metrics))
        cells = [" / ".join(f"{v:.3f}" for v in values)
                 for values in [*scores, [statistics.fmean(v) for v in zip(*scores)]]]
        print(f"| {scale:g} | {steps} | " + " | ".join(cells) + " |", flush=True)


def score(metrics: dict[str, float]) -> tuple[float, ...]:
    """A task's headline numbers: (GenEval overall,) or (OCR exact, normalised edit distance)."""
    if "geneval_overall" in metrics:
        return (metrics["geneval_overall"],)
    return metrics["ocr_accuracy"], metrics["ocr_edit_distance"]


if __name__ == "__main__":
    main()
