"""The signal-to-noise table: how much of a training batch's gradient is signal, per objective,
on the same rollouts of the base model (star/diagnostics/gradient_snr.py, docs/method.md §4.1).

For each row (a set of ``train`` overrides: an allocation, a temporal rule, γ, FDFO, …),
``--estimates`` gradients of its objective at the base weights, each summed over ``--batches``
batches of ``--prompts`` training prompts × the group size from independent noise. Prints, as a
markdown table, the mean pairwise cosine between estimates (≈ signal² / (signal² + noise²) of one
estimate) and the cosine with ``none``'s gradient on the same rollouts, each ± its standard error,
the localisation of the row's weights on the core objects (1 = none) and the mean norm.

    python scripts/diagnose_rl.py [--rows none star ...] [--row 'name={allocation: star, gamma: 3}']
        [--prompts 16] [--batches 2] [--estimates 6] [--json FILE] [-S key=value]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cli import parse_overrides, use_threads  # noqa: E402
from star.config import Config, TrainConfig, config_from_dict, load_config  # noqa: E402
from star.diagnostics.gradient_snr import GradientRow, gradient_table  # noqa: E402
from star.models.sd3 import pipeline_for  # noqa: E402
from star.rl.prompt_source import load_task_prompts, prompt_pool  # noqa: E402
from star.rl.trainer import Trainer, build_objective  # noqa: E402
from star.sampling.rollout import trained_steps  # noqa: E402
from star.scoring import build_reward  # noqa: E402

REFERENCE = "none"
ROWS: dict[str, dict[str, Any]] = {
    "none": {"allocation": "none"},
    "uniform_region": {"allocation": "uniform_region"},
    "temporal map_change": {"allocation": "temporal", "temporal_rule": "map_change"},
    "temporal sigma": {"allocation": "temporal", "temporal_rule": "sigma"},
    "spatial": {"allocation": "spatial"},
    "star γ1": {"allocation": "star", "gamma": 1.0},
    "star γ2": {"allocation": "star", "gamma": 2.0},
    "star γ4": {"allocation": "star", "gamma": 4.0},
    "oracle": {"allocation": "oracle"},
    "shuffled": {"allocation": "shuffled"},
    "fdfo": {"algorithm": "fdfo"},
    "nft": {"algorithm": "nft", "allocation": "none"},
    "nft star": {"algorithm": "nft", "allocation": "star"},
    "nft oracle": {"algorithm": "nft", "allocation": "oracle"},
    "dgpo": {"algorithm": "dgpo", "allocation": "none"},
    "dgpo star": {"algorithm": "dgpo", "allocation": "star"},
    "dgpo oracle": {"algorithm": "dgpo", "allocation": "oracle"},
}
"""Default rows: train overrides on top of the params' train section (the issue's table)."""


SAMPLING_KNOBS = ("steps", "noise_level", "guidance_scale", "sde_window", "capture_blocks", "core_segments",
                  "same_noise_per_group", "group_size", "train_fraction")
"""Train knobs the shared rollouts (and their captured maps) are sampled with: one value per table."""


def row_config(cfg: Config, overrides: dict[str, Any], name: str) -> TrainConfig:
    """The params' train section with a row's overrides, validated (errors name the row).

    A row cannot change how the shared rollouts are sampled or captured (their maps would be
    silently the table's): set such knobs for the whole table with ``-S train.<knob>=...``."""
    sampled = sorted(set(overrides) & set(SAMPLING_KNOBS))
    if sampled:
        raise SystemExit(f"error: row {name!r} sets {sampled}: the rows share rollouts; set it with -S train.<knob>=…")
    return with_row(cfg, overrides, name).train


def with_row(cfg: Config, overrides: dict[str, Any], name: str, seed: int | None = None) -> Config:
    """``cfg`` with a row's ``train`` overrides (and ``seed``), validated; errors name the row."""
    data = cfg.model_dump()
    data["train"] = data["train"] | overrides
    if seed is not None:
        data["seed"] = seed
    return config_from_dict(data, f"row {name!r}")


def parse_rows(specs: list[str]) -> dict[str, dict[str, Any]]:
    """``['name={allocation: star, gamma: 3}']`` -> {'name': {...}} (YAML flow mappings)."""
    rows = {}
    for spec in specs:
        name, sep, body = spec.partition("=")
        overrides = yaml.safe_load(body) if sep else None
        if not name or not isinstance(overrides, dict):
            raise SystemExit(f"error: --row {spec!r} is not of the form 'name={{key: value, ...}}'")
        rows[name] = overrides
    return rows


def markdown(rows: list[GradientRow]) -> str:
    lines = [
        "| objective | mean pairwise cos | ± | cos with none | ± | localisation | mean norm |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        (agree, agree_se), (ref, ref_se) = row.agreement, row.reference
        loc = sum(row.localisation) / len(row.localisation)
        norm = sum(row.norms) / len(row.norms)
        lines.append(f"| {row.name} | {agree:.3f} | {agree_se:.3f} | {ref:.3f} | {ref_se:.3f} | "
                     f"{'' if loc != loc else f'{loc:.2f}'} | {norm:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--rows", nargs="+", default=None, help=f"default rows to measure (all: {', '.join(ROWS)})")
    parser.add_argument("--row", action="append", default=[], metavar="NAME={...}", help="add or replace a row")
    parser.add_argument("--prompts", type=int, default=16, help="training prompts per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches summed into each estimate")
    parser.add_argument("--estimates", type=int, default=6, help="independent estimates (>= 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, parse_overrides(args.set))
    unknown = set(args.rows or []) - set(ROWS)
    if unknown:
        parser.error(f"--rows {sorted(unknown)}: not default rows ({', '.join(ROWS)}); add them with --row")
    chosen = {name: ROWS[name] for name in args.rows} if args.rows else dict(ROWS)
    chosen = {REFERENCE: ROWS[REFERENCE]} | chosen | parse_rows(args.row)
    configs = {name: row_config(cfg, overrides, name) for name, overrides in chosen.items()}
    use_threads(cfg)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    if not 1 <= args.prompts <= len(records):
        parser.error(f"--prompts {args.prompts}: choose 1 … {len(records)} (the training prompts)")
    records = prompt_pool(records, args.prompts, cfg.seed)
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    # The records already are the chosen pool: the trainer must not draw a pool from them again.
    sampler = cfg.model_copy(update={
        "train": configs[REFERENCE].model_copy(update={"allocation": "star", "prompt_pool": 0})})
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(sampler, pipe, reward, records, Path(work), progress=False)
        patch = pipe.transformer.config.patch_size
        objectives = {name: build_objective(train, patch) for name, train in configs.items()}
        rows = gradient_table(trainer, records, objectives, REFERENCE, args.estimates, args.batches)
    rollouts = args.batches * len(records) * cfg.train.group_size
    window = cfg.train.sde_window
    trained = (f"an SDE window of {window} step(s) in the first half" if window
               else trained_steps(None, cfg.train.steps, cfg.train.train_fraction))
    print(f"{rollouts} rollouts per estimate, {args.estimates} estimates, {cfg.train.steps} steps (trained {trained}), "
          f"reward {sum(rows[0].rewards) / len(rows[0].rewards):.3f}, {time.perf_counter() - start:.0f} s\n")
    print(markdown(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "rollouts_per_estimate": rollouts, "estimates": args.estimates,
            "rows": {name: chosen[name] for name in chosen},
            "results": [row.__dict__ for row in rows],
        }, indent=1))


if __name__ == "__main__":
    main()
