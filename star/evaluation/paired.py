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


def share_interval(part: np.ndarray, whole: np.ndarray, level: float = 0.95) -> Interval:
    """The share mean(part) / mean(whole) of paired per-seed gains (a variant's and the positive
    control's, each over the same reference) with Fieller's interval: the shares R for which the
    paired t-test of part − R·whole does not reject 0 (docs/method.md §9.2). Where the control's
    gain itself is not resolved at ``level`` the interval is unbounded (−inf, inf).

    part, whole: (n,) per-seed gains, n ≥ 2."""
    part, whole = np.asarray(part, dtype=float), np.asarray(whole, dtype=float)
    n = len(part)
    (v_part, v_cross), (_, v_whole) = np.cov(part, whole, ddof=1) / n
    t2 = stats.t.ppf(0.5 + level / 2, n - 1) ** 2
    mean_part, mean_whole = part.mean(), whole.mean()
    share = float(mean_part / mean_whole) if mean_whole else float("nan")
    # (mean_part − R mean_whole)² ≤ t² Var(mean_part − R mean_whole): a R² − 2 b R + c ≤ 0
    a = mean_whole**2 - t2 * v_whole
    b = mean_part * mean_whole - t2 * v_cross
    c = mean_part**2 - t2 * v_part
    if a <= 0:
        return Interval(share, -math.inf, math.inf, n)
    root = math.sqrt(max(b * b - a * c, 0.0))
    return Interval(share, float((b - root) / a), float((b + root) / a), n)


def share_table(tables: list[tuple[str, pd.DataFrame]], variants: list[str], reference: str, control: str) -> str:
    """Markdown: per measure and variant, its gain over ``reference`` as a share of ``control``'s
    (the positive control's) gain, paired by seed, with Fieller's 95 % interval."""
    lines = [f"| share of {control}'s gain over {reference} | variant | seeds | share | 95 % Fieller interval |",
             "|---|---|---:|---:|---|"]
    for measure, table in tables:
        if reference not in table or control not in table:
            continue
        for variant in (v for v in variants if v in table and v not in (reference, control)):
            pair = pd.concat([table[variant] - table[reference], table[control] - table[reference]], axis=1).dropna()
            if len(pair) < 2:
                continue
            share = share_interval(pair.iloc[:, 0].to_numpy(), pair.iloc[:, 1].to_numpy())
            bounds = ("unbounded: the control's gain is not resolved" if math.isinf(share.low)
                      else f"[{share.low:+.2f}, {share.high:+.2f}]")
            lines.append(f"| {measure} | {variant} | {share.n} | {share.mean:+.2f} | {bounds} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def zero_reference(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a column ``0`` of zeros: a gain's contrast against no change."""
    return table.assign(**{"0": 0.0})


def learning_and_power(
    scores: pd.DataFrame, curves: pd.DataFrame, task: str, column: str, variants: list[str],
    reference: str | None, pairs: list[tuple[str, str]], target: float, control: str | None = None,
) -> str:
    """Markdown, one table per measure (training-curve gain; the training pool's reward and
    strict score; held-out under the evaluation and the training sampler): whether each variant
    learned (against the base, or no change for the curve) and the study's comparisons (each
    variant − ``reference``, then ``pairs``), every difference paired by seed with its interval
    and power; with a positive ``control``, then each variant's share of its gain (``share_table``)."""
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
    if control is not None and reference is not None:
        shares = share_table([(m, t) for m, t, against in measures if against == "base"], variants, reference, control)
        tables += [shares] if shares else []
    return "\n".join(tables)
