"""Bootstrap intervals of the study's comparisons (star/evaluation/stats.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rewards.geneval_rules import geneval_summary
from star.evaluation.stats import ScoreMatrix, bootstrap, stratified_prompts

TAGS = np.array(["counting"] * 10 + ["colors"] * 30)


def rows(values: np.ndarray, tags: np.ndarray = TAGS) -> pd.DataFrame:
    """Per-image rows of a (seeds, prompts, noises) array of scores."""
    s, n, k = values.shape
    grid = np.stack(np.meshgrid(np.arange(s), np.arange(n), np.arange(k), indexing="ij"), -1).reshape(-1, 3)
    return pd.DataFrame({"seed": grid[:, 0], "prompt_index": grid[:, 1], "noise": grid[:, 2],
                         "tag": tags[grid[:, 1]], "correct": values.reshape(-1)})


def test_statistic_is_genevals_overall() -> None:
    rng = np.random.default_rng(0)
    values = (rng.random((1, 40, 4)) < 0.3).astype(float)
    matrix = ScoreMatrix.from_rows(rows(values), "correct")
    tags = np.repeat(TAGS, 4)
    official = geneval_summary(list(tags), list(values[0].reshape(-1).astype(bool)))["overall"]
    assert matrix.statistic() == pytest.approx(official)
    assert matrix.values.shape == (1, 40)


def test_stratified_resampling_keeps_each_tags_size() -> None:
    index = stratified_prompts(TAGS, np.random.default_rng(1))
    assert (TAGS[index] == "counting").sum() == 10 and (TAGS[index] == "colors").sum() == 30


def test_a_shift_every_prompt_shares_is_resolved_and_no_shift_is_not() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, (3, 40, 4))
    a, b = ScoreMatrix.from_rows(rows(base), "correct"), ScoreMatrix.from_rows(rows(base + 0.2), "correct")
    shifted = bootstrap(b, a, resamples=500)
    assert shifted.mean == pytest.approx(0.2) and shifted.resolved
    same = bootstrap(a, a, resamples=500)
    assert same.mean == 0 and not same.resolved


def test_paired_interval_is_narrower_than_the_unpaired_spread() -> None:
    """Prompt difficulty cancels in a paired difference: its interval is much narrower than
    either checkpoint's own."""
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0, 1, (1, 40, 1))
    a = ScoreMatrix.from_rows(rows(difficulty + rng.normal(0, 0.1, (1, 40, 4))), "correct")
    b = ScoreMatrix.from_rows(rows(difficulty + 0.05 + rng.normal(0, 0.1, (1, 40, 4))), "correct")
    alone, paired = bootstrap(a, resamples=500), bootstrap(b, a, resamples=500)
    assert (paired.high - paired.low) < 0.3 * (alone.high - alone.low)


@pytest.mark.slow
def test_null_intervals_cover_zero_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(4)
    covered = 0
    for trial in range(40):
        a = ScoreMatrix.from_rows(rows(rng.normal(0, 1, (2, 40, 2))), "correct")
        b = ScoreMatrix.from_rows(rows(rng.normal(0, 1, (2, 40, 2))), "correct")
        covered += not bootstrap(b, a, resamples=300, seed=trial).resolved
    assert covered >= 33  # 95 % nominal; 33 of 40 or more with high probability


def test_seeds_widen_the_interval_when_they_disagree() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.1, (3, 40, 4))
    agree = ScoreMatrix.from_rows(rows(noise), "correct")
    disagree = ScoreMatrix.from_rows(rows(noise + np.array([-0.3, 0.0, 0.3])[:, None, None]), "correct")
    width = [(e.high - e.low) for e in (bootstrap(agree, resamples=500), bootstrap(disagree, resamples=500))]
    assert width[1] > 3 * width[0]


def test_mismatched_prompts_are_rejected() -> None:
    a = ScoreMatrix(np.zeros((1, 4)), np.array(["a", "a", "b", "b"]))
    b = ScoreMatrix(np.zeros((1, 4)), np.array(["a", "b", "b", "b"]))
    with pytest.raises(ValueError, match="same prompts"):
        bootstrap(a, b)
