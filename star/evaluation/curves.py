"""Training-reward curves compared across methods, paired by seed (docs/method.md §9.1).

A run's learning rate is the least-squares slope of its per-iteration mean training reward
against the rollouts sampled so far, scaled to reward per 1 000 rollouts (and per minute of
training). Variants trained with the same seeds share the LoRA initialisation, the prompts and
the first iteration's noise, so a comparison takes the per-seed difference of slopes and a
Student-t 95 % interval over seeds; a slope or difference is resolved when the interval
excludes 0. With n seeds the interval has n − 1 degrees of freedom (t = 4.30 at n = 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean over seeds, its 95 % t-interval and the number of seeds."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def resolved(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def t_interval(values: np.ndarray | list[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of independent values (per-seed slopes or paired differences);
    one value has no interval (NaN bounds: never resolved)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("an interval over seeds needs at least one value")
    if len(x) == 1:
        return Interval(float(x[0]), float("nan"), float("nan"), 1)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half), len(x))


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def run_rates(curve: pd.DataFrame, rollouts_per_iteration: int) -> dict[str, float]:
    """One run's learning rates from its per-iteration metrics (columns ``iteration``,
    ``reward_mean``, ``seconds``): reward per 1 000 rollouts and per minute, and the first and
    last quarter's mean reward."""
    rollouts = curve["iteration"].to_numpy() * rollouts_per_iteration
    minutes = curve["seconds"].cumsum().to_numpy() / 60
    reward = curve["reward_mean"].to_numpy()
    quarter = max(1, len(curve) // 4)
    return {
        "per_1000_rollouts": 1000 * slope(rollouts, reward),
        "per_minute": slope(minutes, reward),
        "start": float(reward[:quarter].mean()),
        "end": float(reward[-quarter:].mean()),
        "seconds_per_iteration": float(curve["seconds"].mean()),
    }


def compare(rates: pd.DataFrame, reference: str, measure: str = "per_1000_rollouts") -> pd.DataFrame:
    """Per variant: the mean rate with its t-interval over seeds, and the paired (by seed)
    difference from ``reference`` with its interval. ``rates``: one row per (variant, seed)
    with the column ``measure``. Seeds a variant lacks against the reference are left out of
    its difference."""
    table = rates.pivot(index="seed", columns="variant", values=measure)
    rows = []
    for variant in table.columns:
        own = t_interval(table[variant].dropna())
        paired = (table[variant] - table[reference]).dropna()
        difference = t_interval(paired) if variant != reference and len(paired) else None
        rows.append({"variant": variant, "rate": own, "learns": own.resolved and own.mean > 0,
                     "vs_reference": difference,
                     "resolved": bool(difference and difference.resolved)})
    return pd.DataFrame(rows)


def minimum_detectable(differences: np.ndarray | list[float], power: float = 0.8, level: float = 0.95) -> float:
    """The smallest true paired difference a t-test over these seeds detects with ``power``:
    (t_{1−α/2} + t_{power}) · sd / √n, sd from the observed per-seed differences."""
    x = np.asarray(differences, dtype=float)
    df = len(x) - 1
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * x.std(ddof=1) / np.sqrt(len(x)))
