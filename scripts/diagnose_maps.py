"""Map quality: how well the captured allocation maps localise the core objects, per denoising
step, against the map knobs (star/diagnostics/maps.py, docs/method.md §3.4).

Samples ``--prompts`` training prompts × ``--per-prompt`` rollouts of the base model with the
capture of each (capture blocks, text segments) setting — the same seeds, so the same images —
locates the core objects with the GenEval reward's detector, and prints for each setting of
(γ, λ, clamp, blocks, segments) the localisation of its maps m per step: the share of map weight
on the objects' tokens divided by their area share (1 = no localisation), mean ± standard error
over the images with a detected core object.

    python scripts/diagnose_maps.py [--prompts 32] [--per-prompt 4] [-S key=value]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from star.config import load_config  # noqa: E402
from star.diagnostics.maps import LocalisationRow, capture_maps, localisation_rows  # noqa: E402
from star.method.allocation import AllocationParams  # noqa: E402
from star.method.attention import default_capture_blocks  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts, prompt_pool  # noqa: E402
from star.scoring import build_reward  # noqa: E402


def table(rows: list[tuple[str, LocalisationRow]], steps: int) -> str:
    lines = ["| capture | map | " + " | ".join(f"step {t}" for t in range(steps)) + " |",
             "|---|---|" + "---:|" * steps]
    for capture, row in rows:
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(row.mean, row.sem)]
        lines.append(f"| {capture} | {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prompts", type=int, default=32, help="GenEval training prompts")
    parser.add_argument("--per-prompt", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, parse_overrides(args.set))
    use_threads(cfg)
    train = cfg.train
    records = prompt_pool(load_task_prompts(cfg.paths.prompts, "geneval", "train"), args.prompts, cfg.seed)
    records = [r for r in records for _ in range(args.per_prompt)]
    reward = build_reward(cfg.rewards.for_task("geneval"), cfg.paths.reward_models)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    layers = len(pipe.transformer.transformer_blocks)
    captures = {
        f"blocks {default_capture_blocks(layers)} (default), both segments": {},
        "every block": {"capture_blocks": list(range(layers))},
        "first block": {"capture_blocks": [0]},
        "last block": {"capture_blocks": [layers - 1]},
        "CLIP segment only": {"core_segments": "clip"},
        "T5 segment only": {"core_segments": "t5"},
    }
    knobs = {
        "raw A (γ 1, λ 1, no clamp)": AllocationParams(1.0, 1.0, 0.0, 1e9),
        **{f"γ {g:g}, λ {train.mix:g}, clamp [{train.w_min:g}, {train.w_max:g}]":
           AllocationParams(g, train.mix, train.w_min, train.w_max) for g in (1.0, 2.0, 4.0)},
        f"γ {train.gamma:g}, λ 0.5": AllocationParams(train.gamma, 0.5, train.w_min, train.w_max),
    }
    rows: list[tuple[str, LocalisationRow]] = []
    for capture, overrides in captures.items():
        maps = capture_maps(pipe, records, train.model_copy(update=overrides), args.seed, reward)
        settings = knobs if not overrides else {"raw A (γ 1, λ 1, no clamp)": knobs["raw A (γ 1, λ 1, no clamp)"]}
        rows += [(capture, row) for row in localisation_rows(maps, settings)]
        print(f"{capture}: {rows[-1][1].images} of {len(records)} images with a detected core object", flush=True)
    print(f"\n{len(records)} rollouts ({args.prompts} prompts x {args.per_prompt}), {train.steps} steps\n")
    print(table(rows, train.steps))


if __name__ == "__main__":
    main()
