"""How much of a training batch's gradient is signal, per study variant (star/diagnostics.py).

For each variant, ``--estimates`` gradients of its objective at the base weights, each summed
over ``--batches`` batches of ``--prompts`` training prompts × the group size, from independent
noise; prints the mean pairwise cosine (≈ signal² / (signal² + noise²) of one estimate) with its
standard error, the mean norm and the mean reward as a markdown table. ``-S`` overrides params as
in the stages, e.g. ``-S train.sde_window=3`` or a variant outside the study:
``-S 'study.variants.fdfo={algorithm: fdfo}' --variants fdfo``.

    python scripts/diagnose_rl.py [--variants none star] [--prompts 16] [--batches 2]
        [--estimates 4] [-S key=value]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from rewards.registry import build_reward  # noqa: E402
from star.config import load_config  # noqa: E402
from star.diagnostics import gradient_agreement  # noqa: E402
from star.models import pipeline_for  # noqa: E402
from star.prompt_source import load_task_prompts, prompt_pool  # noqa: E402
from star.trainer import Trainer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--variants", nargs="+", default=None, help="study variants (default: all)")
    parser.add_argument("--prompts", type=int, default=16, help="training prompts per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches summed into each estimate")
    parser.add_argument("--estimates", type=int, default=4, help="independent estimates (>= 2)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, parse_overrides(args.set))
    use_threads(cfg)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    if not 1 <= args.prompts <= len(records):
        parser.error(f"--prompts {args.prompts}: choose 1 … {len(records)} (the training prompts)")
    records = prompt_pool(records, args.prompts, cfg.seed)
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    print("| variant | rollouts per estimate | mean cos | ± | mean norm | reward |\n|---|---:|---:|---:|---:|---:|")
    for variant in args.variants or list(cfg.study.variants):
        variant_cfg = cfg.for_variant(variant)
        pipe = pipeline_for(variant_cfg.model, variant_cfg.paths.base_model)  # fresh: the trainer adds LoRA
        with tempfile.TemporaryDirectory() as work:
            trainer = Trainer(variant_cfg, pipe, reward, records, Path(work), progress=False)
            result = gradient_agreement(trainer, records, args.batches, seeds=list(range(1, args.estimates + 1)))
        norm = sum(result.norms) / len(result.norms)
        print(f"| {variant} | {result.rollouts_per_estimate} | {result.cosine_mean:.3f} | {result.cosine_sem:.3f} | "
              f"{norm:.3g} | {result.reward_mean:.3f} |", flush=True)


if __name__ == "__main__":
    main()
