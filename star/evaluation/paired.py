"""Comparisons paired by seed, with the power the design has (docs/method.md §9.2).

Variants trained with the same seed share the LoRA initialisation, the prompts and the first
rollouts' noise, and every checkpoint is scored on the same prompts and noises; so the unit of
a comparison is the seed. Each seed's score is its tag-balanced mean over the (prompt, noise)
images (GenEval's "overall"); a difference a − b is taken seed by seed and gets a Student-t 95 %
interval over seeds (star/evaluation/curves.py, whose coverage on simulated nulls is tested).
Beside each difference the minimum detectable difference (80 % power, from the observed spread of
the per-seed differences) and the number of seeds that would bring it to a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from star.evaluation.curves import Interval, minimum_detectable, t_interval

MAX_SEEDS = 100
"""The largest number of seeds ``seeds_needed`` considers."""


def seed_scores(scores: pd.DataFrame, task: str, column: str) -> pd.DataFrame:
    """(seeds × variants) table of each checkpoint's tag-balanced mean of ``column`` over the
    ``task`` rows of ``scores`` (columns ``task``, ``variant``, ``seed``, ``tag`` and ``column``)."""
    rows = scores[scores.task == task]
    per_tag = rows.groupby(["variant", "seed", "tag"], sort=False)[column].mean()
    return per_tag.groupby(["variant", "seed"], sort=False).mean().unstack("variant")


@dataclass(frozen=True)
class Contrast:
    """A paired difference over seeds: its interval, minimum detectable difference and the seeds
    a detectable difference of ``target`` needs (None when the per-seed differences cannot say)."""

    name: str
    difference: Interval
    detectable: float
    seeds_for_target: int | None

    def row(self) -> list[str]:
        detectable = "" if math.isnan(self.detectable) else f"{self.detectable:.3f}"
        needed = "" if self.seeds_for_target is None else str(self.seeds_for_target)
        return [self.name, str(self.difference.n), f"{self.difference.mean:+.3f}",
                _bounds(self.difference), "✓" if self.difference.resolved else "", detectable, needed]


def _bounds(interval: Interval) -> str:
    if math.isnan(interval.low):
        return ""
    return f"[{interval.low:+.3f}, {interval.high:+.3f}]"


def seeds_needed(spread: float, target: float, power: float = 0.8, level: float = 0.95) -> int | None:
    """The fewest seeds whose paired t-test detects ``target`` with ``power`` when per-seed
    differences spread by ``spread`` (their standard deviation); None beyond ``MAX_SEEDS``."""
    if not spread > 0:
        return 2 if spread == 0 else None
    for n in range(2, MAX_SEEDS + 1):
        df = n - 1
        if (stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * spread / math.sqrt(n) <= target:
            return n
    return None


def contrast(table: pd.DataFrame, a: str, b: str, target: float) -> Contrast:
    """``a`` − ``b`` seed by seed from a (seeds × variants) table; a variant with a single row
    (the base) is the same for every seed."""
    left, right = _per_seed(table, a), _per_seed(table, b)
    differences = (left - right).dropna().to_numpy()
    if len(differences) < 2:
        return Contrast(f"{a} − {b}", t_interval(differences), float("nan"), None)
    spread = float(np.std(differences, ddof=1))
    return Contrast(f"{a} − {b}", t_interval(differences), minimum_detectable(differences),
                    seeds_needed(spread, target))


def _per_seed(table: pd.DataFrame, variant: str) -> pd.Series:
    column = table[variant].dropna()
    if len(column) == 1 and len(table.index) > 1:  # the base: one checkpoint, every seed's reference
        return pd.Series(float(column.iloc[0]), index=table.index)
    return table[variant]


def contrast_table(contrasts: list[Contrast], measure: str, target: float) -> str:
    """Markdown: one row per contrast with its per-seed paired interval and power."""
    lines = [f"| {measure} | seeds | Δ | 95 % t-interval | resolved | MDD (80 %) | seeds for MDD ≤ {target:g} |",
             "|---|---:|---:|---|---|---:|---:|"]
    lines += ["| " + " | ".join(c.row()) + " |" for c in contrasts]
    return "\n".join(lines) + "\n"


def curve_gains(curves: pd.DataFrame) -> pd.DataFrame:
    """(seeds × variants) gain of each run's training reward, last quarter − first quarter of its
    iterations, from the long table of ``star.evaluation.report.training_curves``."""
    def gain(run: pd.DataFrame) -> float:
        reward = run.sort_values("iteration")["reward_mean"].to_numpy()
        quarter = max(1, len(reward) // 4)
        return float(reward[-quarter:].mean() - reward[:quarter].mean())

    if curves.empty:
        return pd.DataFrame()
    gains = curves.groupby(["variant", "seed"], sort=False)[["iteration", "reward_mean"]].apply(gain)
    return gains.unstack("variant")


def zero_reference(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a column ``0`` of zeros: a gain's contrast against no change."""
    return table.assign(**{"0": 0.0})


def learning_and_power(
    scores: pd.DataFrame, curves: pd.DataFrame, task: str, column: str, variants: list[str],
    reference: str | None, pairs: list[tuple[str, str]], target: float,
) -> str:
    """Markdown, one table per measure (training-curve gain; the training pool's reward and
    strict score; held-out under the evaluation and the training sampler): whether each variant
    learned (against the base, or no change for the curve) and the study's comparisons (each
    variant − ``reference``, then ``pairs``), every difference paired by seed with its interval
    and power."""
    gains = curve_gains(curves)
    measures = [("training reward, last − first quarter", zero_reference(gains), "0")] if not gains.empty else []
    pool, sampler = f"pool_{task}", f"train_sampler_{task}"
    if (scores.task == pool).any():
        measures += [(f"training pool, training reward ({task}, eval sampler)", seed_scores(scores, pool, "reward"),
                      "base"),
                     (f"training pool, {column} ({task}, eval sampler)", seed_scores(scores, pool, column), "base")]
    measures.append((f"held-out {task}, {column} (eval sampler)", seed_scores(scores, task, column), "base"))
    if (scores.task == sampler).any():
        measures.append((f"held-out {task}, {column} (training sampler)", seed_scores(scores, sampler, column),
                         "base"))
    comparisons = [(v, reference) for v in variants if reference and v != reference] + list(pairs)
    tables = []
    for measure, table, against in measures:
        rows = [contrast(table, v, against, target) for v in variants if v in table and against in table]
        if against == "base":  # the curves' gains come from different samplers: only the evaluations compare
            rows += [contrast(table, a, b, target) for a, b in comparisons if a in table and b in table]
        if rows:
            tables.append(contrast_table(rows, measure, target))
    return "\n".join(tables)
