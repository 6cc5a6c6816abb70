"""Training-reward curves of several algorithms on the training prompts, paired by seed, and how
fast each learns (star/evaluation/curves.py, docs/method.md §9.1).

    python scripts/learning_curves.py run --out DIR [--rows none nft dgpo fdfo] [--row 'name={...}']
        [--seeds 0 1 2] [--jobs 2] [--params params.yaml] [-S key=value ...]
    python scripts/learning_curves.py summarise DIR [--reference none]

``run`` trains every row with every seed (rows: ``train`` overrides on the params; each run a
process of its own with one torch thread, ``--jobs`` at a time) and writes each run's
per-iteration metrics to DIR/<row>-s<seed>.csv and, when ``eval.pool_noises`` > 0, the training
pool's scores before and after training on fixed noises to DIR/<row>-s<seed>.pool.csv.
``summarise`` prints, per row, the training reward's slope per 1 000 rollouts and per minute and
the pool's gain, each with 95 % t-intervals over seeds, the paired difference from the reference
row and its minimum detectable difference (80 % power).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.diagnose_rl import parse_rows, with_row  # noqa: E402

ROWS: dict[str, dict[str, Any]] = {
    "none": {"algorithm": "grpo", "allocation": "none"},
    "star": {"algorithm": "grpo", "allocation": "star"},
    "fdfo": {"algorithm": "fdfo"},
    "nft": {"algorithm": "nft", "allocation": "none"},
    "dgpo": {"algorithm": "dgpo", "allocation": "none"},
}
"""Default rows: train overrides on top of the params' train section."""


def chosen_rows(names: list[str] | None, specs: list[str]) -> dict[str, dict[str, Any]]:
    """The named default rows (none, nft, dgpo, fdfo when none are named) and the ``--row`` specs."""
    return {name: ROWS[name] for name in (names or ["none", "nft", "dgpo", "fdfo"])} | parse_rows(specs)


def train_one(params: str, sets: list[str], row: dict[str, Any], seed: int, out: Path) -> None:
    """One run in this process: the row's config with ``seed``, its history to ``out``."""
    import pandas as pd

    from pipelines.cli import parse_overrides, use_threads
    from pipelines.evaluate import score_pool
    from star.config import load_config
    from star.models.sd3 import pipeline_for
    from star.rl.prompt_source import load_task_prompts
    from star.rl.trainer import Trainer
    from star.scoring import build_reward

    cfg = with_row(load_config(params, parse_overrides(sets)), row, out.stem, seed)
    use_threads(cfg)
    records = load_task_prompts(cfg.paths.prompts, cfg.rewards.task, "train")
    reward = build_reward(cfg.rewards, cfg.paths.reward_models)
    pipe = pipeline_for(cfg.model, cfg.paths.base_model)
    pool = [] if cfg.eval.pool_noises == 0 else [pd.DataFrame(score_pool(pipe, cfg).rows).assign(when="before")]
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(cfg, pipe, reward, records, Path(work), progress=False)
        trainer.on_metrics = lambda metrics, iteration: print(  # progress, in the run's log
            f"iteration {iteration}/{cfg.train.iterations}: reward {metrics['reward_mean']:.3f} "
            f"({metrics['seconds']:.0f} s)", flush=True)
        trainer.train()
        if pool:
            trainer.final_weights()
            pool.append(pd.DataFrame(score_pool(pipe, cfg).rows).assign(when="after"))
            pd.concat(pool).to_csv(out.with_suffix(".pool.csv"), index=False)
    frame = pd.DataFrame(trainer.history)
    frame["rollouts_per_iteration"] = cfg.train.prompts_per_iteration * cfg.train.group_size
    frame.to_csv(out, index=False)


def run_all(args: argparse.Namespace) -> None:
    rows = chosen_rows(args.rows, args.row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps({"rows": rows, "seeds": args.seeds, "sets": args.set}, indent=1))
    jobs = [(name, seed) for seed in args.seeds for name in rows if not (args.out / f"{name}-s{seed}.csv").exists()]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def launch(job: tuple[str, int]) -> str:
        name, seed = job
        start = time.perf_counter()
        command = [sys.executable, __file__, "one", "--params", args.params, "--row-json", json.dumps(rows[name]),
                   "--seed", str(seed), "--csv", str(args.out / f"{name}-s{seed}.csv"),
                   *[part for item in args.set for part in ("-S", item)]]
        log = args.out / f"{name}-s{seed}.log"
        with log.open("w") as stream:
            code = subprocess.call(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
        status = "done" if code == 0 else f"FAILED (exit {code}, see {log})"
        print(f"{name} seed {seed}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
        return status

    with ThreadPoolExecutor(args.jobs) as pool:
        statuses = list(pool.map(launch, jobs))
    if any(s != "done" for s in statuses):
        raise SystemExit(1)


def summarise(args: argparse.Namespace) -> None:
    import pandas as pd

    from star.evaluation.curves import compare, minimum_detectable, run_rates

    records = []
    for csv in sorted(path for path in args.dir.glob("*-s*.csv") if not path.name.endswith(".pool.csv")):
        name, _, seed = csv.stem.rpartition("-s")
        curve = pd.read_csv(csv)
        records.append({"variant": name, "seed": int(seed),
                        **run_rates(curve, int(curve["rollouts_per_iteration"].iloc[0])),
                        **pool_gain(csv.with_suffix(".pool.csv"))})
    rates = pd.DataFrame(records)
    if args.reference not in set(rates["variant"]):
        raise SystemExit(f"error: no runs of the reference row {args.reference!r} in {args.dir}")
    by_rollouts = compare(rates, args.reference)
    by_minutes = compare(rates, args.reference, "per_minute")
    table = rates.pivot(index="seed", columns="variant", values="per_1000_rollouts")
    print(f"Training reward per 1 000 rollouts and per minute (slopes; mean over seeds, 95 % t-interval; "
          f"paired by seed against {args.reference}):\n")
    print("| row | seeds | reward start → end | per 1 000 rollouts | learns | − " + args.reference +
          " | resolved | MDD | per minute | − " + args.reference + " (per minute) | s / iteration |")
    print("|---|---:|---|---|---|---|---|---:|---|---|---:|")
    for (_, row), (_, minute) in zip(by_rollouts.iterrows(), by_minutes.iterrows()):
        own = rates[rates["variant"] == row["variant"]]
        diff = table[row["variant"]] - table[args.reference]
        paired = diff.dropna()
        mdd = minimum_detectable(paired) if row["vs_reference"] is not None and len(paired) > 1 else float("nan")
        print(f"| {row['variant']} | {row['rate'].n} | {own['start'].mean():.3f} → {own['end'].mean():.3f} | "
              f"{row['rate']} | {'yes' if row['learns'] else 'no'} | {row['vs_reference'] or ''} | "
              f"{'yes' if row['resolved'] else 'no'} | {'' if mdd != mdd else f'{mdd:.4f}'} | {minute['rate']} | "
              f"{minute['vs_reference'] or ''} | {own['seconds_per_iteration'].mean():.1f} |")
    if "pool_reward" in rates.columns:
        print_pool_gains(rates.dropna(subset=["pool_reward"]), args.reference)


def pool_gain(path: Path) -> dict[str, float]:
    """A run's mean gain on its training pool, after − before on the same (prompt, noise) pairs:
    ``pool_reward`` (the training reward) and ``pool_strict`` (the task's evaluation score)."""
    import pandas as pd

    if not path.is_file():
        return {}
    scores = pd.read_csv(path)
    strict = next(c for c in ("correct", "exact", "score") if c in scores.columns)
    means = scores.groupby("when")[["reward", strict]].mean()
    return {"pool_reward": float(means.loc["after", "reward"] - means.loc["before", "reward"]),
            "pool_strict": float(means.loc["after", strict] - means.loc["before", strict]),
            "pool_before": float(means.loc["before", "reward"])}


def print_pool_gains(rates: pd.DataFrame, reference: str) -> None:
    """The training pool's gain per row (t-interval over seeds) and its paired difference from
    ``reference`` with the minimum detectable difference."""
    from star.evaluation.curves import compare, minimum_detectable

    print(f"\nGain on the training pool, after − before on the same noises (eval sampler; mean over seeds, "
          f"95 % t-interval; paired by seed against {reference}):\n")
    print(f"| row | seeds | reward before | reward gain | learns | − {reference} | MDD | strict gain | − {reference} |")
    print("|---|---:|---:|---|---|---|---:|---|---|")
    strict = compare(rates, reference, "pool_strict")
    table = rates.pivot(index="seed", columns="variant", values="pool_reward")
    for (_, row), (_, hard) in zip(compare(rates, reference, "pool_reward").iterrows(), strict.iterrows()):
        paired = (table[row["variant"]] - table[reference]).dropna()
        mdd = minimum_detectable(paired) if row["vs_reference"] is not None and len(paired) > 1 else float("nan")
        before = rates.loc[rates["variant"] == row["variant"], "pool_before"].mean()
        print(f"| {row['variant']} | {row['rate'].n} | {before:.3f} | {row['rate']} | "
              f"{'yes' if row['learns'] else 'no'} | {row['vs_reference'] or ''} | "
              f"{'' if mdd != mdd else f'{mdd:.4f}'} | {hard['rate']} | {hard['vs_reference'] or ''} |")


def plot(directory: Path, path: Path) -> Path:
    """Mean training reward against rollouts per row (line: mean over seeds; band: min … max)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from star.evaluation.figures import save_figure

    curves: dict[str, list[pd.DataFrame]] = {}
    for csv in sorted(path for path in directory.glob("*-s*.csv") if not path.name.endswith(".pool.csv")):
        curves.setdefault(csv.stem.rpartition("-s")[0], []).append(pd.read_csv(csv))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in curves.items():
        rollouts = runs[0]["iteration"] * runs[0]["rollouts_per_iteration"]
        rewards = pd.concat([run["reward_mean"] for run in runs], axis=1)
        line = ax.plot(rollouts, rewards.mean(axis=1), label=f"{name} ({len(runs)} seeds)")[0]
        ax.fill_between(rollouts, rewards.min(axis=1), rewards.max(axis=1), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("rollouts sampled")
    ax.set_ylabel("training reward (iteration mean)")
    ax.set_title("Training reward against rollouts: mean over seeds, band min … max")
    ax.legend(fontsize="small", loc="lower right", ncol=2)
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every row with every seed")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--params", default="params.yaml")
    run.add_argument("--rows", nargs="+", default=None, choices=sorted(ROWS))
    run.add_argument("--row", action="append", default=[], metavar="NAME={...}")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--jobs", type=int, default=2)
    run.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    one = sub.add_parser("one", help="one run in this process (what `run` launches)")
    one.add_argument("--params", default="params.yaml")
    one.add_argument("--row-json", required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--csv", type=Path, required=True)
    one.add_argument("-S", "--set", action="append", default=[])
    summary = sub.add_parser("summarise", help="slopes, paired differences and intervals")
    summary.add_argument("dir", type=Path)
    summary.add_argument("--reference", default="none")
    summary.add_argument("--plot", type=Path, default=None, help="also draw the curves to this PNG")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(args)
    elif args.command == "one":
        train_one(args.params, args.set, json.loads(args.row_json), args.seed, args.csv)
    else:
        summarise(args)
        if args.plot:
            print(f"\ncurves: {plot(args.dir, args.plot)}")


if __name__ == "__main__":
    main()
