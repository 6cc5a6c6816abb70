"""Comparisons paired by seed from per-image score rows: tag-balanced seed scores, the base as
every seed's reference, the power calculation, and the interval's coverage on simulated nulls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from star.evaluation.curves import minimum_detectable
from star.evaluation.paired import (
    contrast,
    curve_gains,
    learning_and_power,
    seed_scores,
    seeds_needed,
    share_interval,
)

TAGS = ["a", "b", "c"]


def _rows(rng: np.random.Generator, variant: str, seed: int, level: float, prompts: int = 12,
          noises: int = 4, task: str = "geneval") -> pd.DataFrame:
    """Bernoulli scores of one checkpoint around ``level``, prompts of fixed difficulties."""
    difficulty = np.random.default_rng(99).normal(0, 0.15, prompts)
    p = np.tile(np.clip(level + difficulty, 0.02, 0.98), noises)
    index = np.tile(np.arange(prompts), noises)
    return pd.DataFrame({"task": task, "variant": variant, "seed": seed, "prompt_index": index,
                         "noise": np.repeat(np.arange(noises), prompts), "tag": np.array(TAGS)[index % 3],
                         "correct": (rng.random(len(p)) < p).astype(float), "reward": p + rng.normal(0, 0.05, len(p))})


def test_seed_scores_are_tag_balanced_means() -> None:
    rows = pd.DataFrame({"task": "geneval", "variant": "v", "seed": 0, "tag": ["a", "a", "a", "b"],
                         "correct": [1.0, 1.0, 1.0, 0.0]})
    assert seed_scores(rows, "geneval", "correct").loc[0, "v"] == pytest.approx(0.5)  # (1 + 0) / 2, not 3 / 4


def test_the_base_is_every_seeds_reference() -> None:
    table = pd.DataFrame({"base": [0.2, np.nan, np.nan], "v": [0.3, 0.25, 0.35]}, index=[0, 1, 2])
    result = contrast(table, "v", "base", target=0.04)
    assert result.difference.mean == pytest.approx(0.1) and result.difference.n == 3
    assert result.detectable == pytest.approx(minimum_detectable([0.1, 0.05, 0.15]))
    assert result.name == "v − base"


def test_seeds_needed_is_the_first_count_whose_detectable_difference_meets_the_target() -> None:
    def detectable(n: int, spread: float) -> float:  # minimum_detectable of n differences whose sd is `spread`
        z = np.random.default_rng(n).normal(size=n)
        return minimum_detectable((z - z.mean()) / z.std(ddof=1) * spread)

    needed = seeds_needed(0.05, 0.04)
    assert needed is not None and needed > 2
    assert detectable(needed, 0.05) <= 0.04 < detectable(needed - 1, 0.05)
    assert seeds_needed(10.0, 0.001) is None and seeds_needed(0.0, 0.04) == 2


def test_a_seed_paired_difference_covers_a_null_95_percent_of_the_time() -> None:
    """Two variants of equal quality whose seeds share a large effect (the initialisation, the
    prompts and the first noise): the per-seed paired interval holds 0 in about 95 % of 400
    simulated three-seed studies."""
    rng = np.random.default_rng(0)
    covered = 0
    trials = 400
    for _ in range(trials):
        shared = rng.normal(0, 0.08, 3)
        frames = [_rows(rng, v, s, 0.4 + shared[s] + rng.normal(0, 0.01), prompts=9, noises=2)
                  for v in ("x", "y") for s in range(3)]
        table = seed_scores(pd.concat(frames), "geneval", "correct")
        covered += not contrast(table, "x", "y", 0.04).difference.resolved
    assert 0.91 <= covered / trials <= 0.99


def test_curve_gains_are_last_minus_first_quarter() -> None:
    curves = pd.DataFrame({"variant": "v", "seed": 0, "iteration": range(1, 9),
                           "reward_mean": [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.5, 0.5]})
    assert curve_gains(curves).loc[0, "v"] == pytest.approx(0.4)


def test_learning_and_power_reports_learning_and_each_comparison() -> None:
    rng = np.random.default_rng(1)
    scores = pd.concat([
        _rows(rng, "base", 0, 0.3), _rows(rng, "base", 0, 0.3, task="pool_geneval"),
        *[_rows(rng, v, s, level, task=task) for v, level in (("none", 0.35), ("star", 0.45), ("oracle", 0.5))
          for s in range(3) for task in ("geneval", "pool_geneval")],
    ])
    curves = pd.DataFrame([{"variant": v, "seed": s, "iteration": i, "reward_mean": 0.2 + 0.01 * i * (v != "none")}
                           for v in ("none", "star", "oracle") for s in range(3) for i in range(1, 9)])
    text = learning_and_power(scores, curves, "geneval", "correct", ["none", "star", "oracle"], "none",
                              [("oracle", "star")], 0.04)
    tables = text.split("\n\n")
    assert [table.split("|")[1].strip() for table in tables] == [
        "training reward, last − first quarter", "training pool, training reward (geneval, eval sampler)",
        "training pool, correct (geneval, eval sampler)", "held-out geneval, correct (eval sampler)"]
    assert "star − none" not in tables[0] and "star − none" in tables[3]
    for name in ("star − base", "star − none", "oracle − none", "oracle − star", "star − 0"):
        assert name in text
    assert "seeds for MDD ≤ 0.04" in text


def test_fieller_share_is_the_set_of_shares_the_paired_t_test_keeps() -> None:
    """At each bound of the interval the paired t-interval of part − R·whole touches 0."""
    from star.evaluation.curves import t_interval

    part, whole = np.array([0.02, 0.035, 0.01, 0.03]), np.array([0.08, 0.06, 0.07, 0.09])
    share = share_interval(part, whole)
    assert share.mean == pytest.approx(part.mean() / whole.mean()) and share.n == 4
    for bound in (share.low, share.high):
        edge = t_interval(part - bound * whole)
        assert min(abs(edge.low), abs(edge.high)) == pytest.approx(0, abs=1e-12)
    inside = t_interval(part - share.mean * whole)
    assert inside.low < 0 < inside.high
    unresolved = share_interval(part, np.array([0.05, -0.04, 0.03, -0.02]))
    assert np.isinf(unresolved.low) and np.isinf(unresolved.high), "a control's gain that is not resolved"


def test_fieller_share_covers_the_true_share_95_percent_of_the_time() -> None:
    """Four seeds whose gains share a seed effect: the interval holds the true share (0.4) in about
    95 % of 2 000 simulated studies, unbounded intervals included."""
    rng = np.random.default_rng(3)
    covered, trials = 0, 2000
    for _ in range(trials):
        seed_effect = rng.normal(0, 0.02, 4)
        whole = 0.06 + seed_effect + rng.normal(0, 0.02, 4)
        part = 0.4 * 0.06 + 0.5 * seed_effect + rng.normal(0, 0.02, 4)
        share = share_interval(part, whole)
        covered += share.low <= 0.4 <= share.high
    assert 0.93 <= covered / trials <= 0.97


def test_learning_and_power_gives_each_variants_share_of_the_controls_gain() -> None:
    rng = np.random.default_rng(2)
    levels = {"none": 0.35, "star": 0.4, "oracle": 0.5}
    scores = pd.concat([_rows(rng, "base", 0, 0.3), *[_rows(rng, v, s, level) for v, level in levels.items()
                                                      for s in range(3)]])
    text = learning_and_power(scores, pd.DataFrame(), "geneval", "correct", ["none", "star", "oracle"], "none", [],
                              0.04, control="oracle")
    shares = text.split("\n\n")[-1]
    assert shares.startswith("| share of oracle's gain over none |")
    (row,) = [line for line in shares.splitlines() if "| star |" in line]
    table = seed_scores(scores, "geneval", "correct")
    expected = ((table.star - table.none).mean() / (table.oracle - table.none).mean())
    assert f"{expected:+.2f}" in row
