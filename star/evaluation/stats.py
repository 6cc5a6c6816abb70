"""Confidence intervals for the study's comparisons (docs/method.md §9).

Every checkpoint is scored on the same test prompts with the same initial noises
(star/evaluation/evaluate.py), so a task's scores form a matrix P (seeds × prompts): entry (s, i) is the
mean over the noises of prompt i's per-image score for the variant trained with seed s. The
headline statistic is the mean over tags of the mean over prompts of the seed-mean, which for
GenEval is the official "overall" (mean of the per-task accuracies) and for a task without tags
the plain mean. Intervals are percentile bootstraps that resample prompts within each tag (the
test set's balance is kept) and, for trained variants, seeds. A difference between two
checkpoints resamples the *same* prompts for both (paired); each side's seeds are resampled on
their own. A difference is resolved when its 95 % interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Estimate:
    """A statistic and its 95 % bootstrap interval."""

    mean: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        """The interval excludes 0 (meaningful for differences)."""
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class ScoreMatrix:
    """values: (S, N) prompt means per seed; tags: (N,) tag of each prompt."""

    values: np.ndarray
    tags: np.ndarray

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, column: str) -> ScoreMatrix:
        """From per-image rows with ``seed``, ``prompt_index``, ``noise``, ``tag`` and ``column``."""
        means = rows.groupby(["seed", "prompt_index"])[column].mean().unstack("prompt_index")
        if means.isna().any().any():
            raise ValueError(f"seeds scored different prompts: {sorted(means.columns[means.isna().any()])[:5]} …")
        tags = rows.groupby("prompt_index")["tag"].first().reindex(means.columns).to_numpy()
        return cls(means.to_numpy(dtype=float), tags)

    def statistic(self, seeds: np.ndarray | None = None, prompts: np.ndarray | None = None) -> float:
        """Mean over tags of the mean over (resampled) prompts of the (resampled) seeds' mean."""
        values = self.values if seeds is None else self.values[seeds]
        index = np.arange(self.values.shape[1]) if prompts is None else prompts
        per_prompt = values[:, index].mean(axis=0)
        tags = self.tags[index]
        return float(np.mean([per_prompt[tags == tag].mean() for tag in np.unique(tags)]))


def stratified_prompts(tags: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Prompt indices drawn with replacement within each tag (as many per tag as it has)."""
    return np.concatenate([rng.choice(np.flatnonzero(tags == tag), size=int((tags == tag).sum()))
                           for tag in np.unique(tags)])


def bootstrap(
    scores: ScoreMatrix, reference: ScoreMatrix | None = None, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """The statistic of ``scores`` (minus ``reference``'s, paired by prompt) with its interval."""
    if reference is not None and not np.array_equal(scores.tags, reference.tags):
        raise ValueError("a paired difference needs both checkpoints scored on the same prompts")
    rng = np.random.default_rng(seed)

    def value(s: np.ndarray | None, r: np.ndarray | None, prompts: np.ndarray | None) -> float:
        out = scores.statistic(s, prompts)
        return out - reference.statistic(r, prompts) if reference is not None else out

    draws = np.empty(resamples)
    for b in range(resamples):
        prompts = stratified_prompts(scores.tags, rng)
        s = rng.integers(len(scores.values), size=len(scores.values))
        r = rng.integers(len(reference.values), size=len(reference.values)) if reference is not None else None
        draws[b] = value(s, r, prompts)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(value(None, None, None), float(low), float(high))
