"""Learning-rate comparisons over seeds: slopes, paired t-intervals, and their coverage on
simulated nulls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from star.evaluation.curves import compare, minimum_detectable, run_rates, slope, t_interval


def _curve(rng: np.random.Generator, rate: float, seed_offset: float, iterations: int = 16) -> pd.DataFrame:
    """A run's curve: reward = 0.3 + seed offset + rate per rollout · rollouts + iteration noise."""
    iteration = np.arange(1, iterations + 1)
    reward = 0.3 + seed_offset + rate * iteration * 128 + rng.normal(0, 0.01, iterations)
    return pd.DataFrame({"iteration": iteration, "reward_mean": reward, "seconds": np.full(iterations, 30.0)})


def test_slope_per_thousand_rollouts_recovers_a_known_rate() -> None:
    curve = _curve(np.random.default_rng(0), rate=2e-5, seed_offset=0.0, iterations=64)
    rates = run_rates(curve, 128)
    assert rates["per_1000_rollouts"] == pytest.approx(0.02, abs=0.002)
    assert rates["per_minute"] == pytest.approx(0.02 * 128 * 2 / 1000, rel=0.1)  # 2 iterations a minute
    assert slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)


def test_t_interval_of_three_seeds_uses_two_degrees_of_freedom() -> None:
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.high - 2.0 == pytest.approx(4.3027 * 1.0 / np.sqrt(3), rel=1e-4)
    assert not interval.resolved and t_interval([1.0, 1.1, 1.2]).resolved
    single = t_interval([1.0])
    assert single.mean == 1.0 and single.n == 1 and not single.resolved and single.low != single.low
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])


def test_paired_interval_covers_a_null_difference_95_percent_of_the_time() -> None:
    """Two variants with the same true rate, seeds sharing a large offset (as paired runs do):
    the paired difference's interval holds 0 in about 95 % of 500 simulated studies, and the
    minimum detectable difference is detected about 80 % of the time."""
    rng = np.random.default_rng(7)
    covered, detected, mdds = 0, 0, []
    for _ in range(500):
        rows = []
        for seed in range(3):
            offset = rng.normal(0, 0.05)
            for variant, rate in (("none", 1e-5), ("other", 1e-5)):
                curve = _curve(rng, rate + rng.normal(0, 3e-6), offset)
                rows.append({"variant": variant, "seed": seed, **run_rates(curve, 128)})
        table = compare(pd.DataFrame(rows), "none")
        difference = table.set_index("variant").loc["other", "vs_reference"]
        covered += difference.low <= 0 <= difference.high
        frame = pd.DataFrame(rows).pivot(index="seed", columns="variant", values="per_1000_rollouts")
        mdds.append(minimum_detectable(frame["other"] - frame["none"]))
    assert 0.92 <= covered / 500 <= 0.98
    # a true difference of the median MDD, same noise: detected in roughly 80 % of studies
    shift = float(np.median(mdds)) / 1000
    for _ in range(300):
        rows = []
        for seed in range(3):
            offset = rng.normal(0, 0.05)
            for variant, rate in (("none", 1e-5), ("other", 1e-5 + shift)):
                rows.append({"variant": variant, "seed": seed,
                             **run_rates(_curve(rng, rate + rng.normal(0, 3e-6), offset), 128)})
        detected += bool(compare(pd.DataFrame(rows), "none").set_index("variant").loc["other", "resolved"])
    assert 0.6 <= detected / 300 <= 0.95


def test_learning_curves_summary_prints_paired_rows_and_draws_the_curves(tmp_path, capsys) -> None:
    from scripts.learning_curves import main

    rng = np.random.default_rng(1)
    for seed in range(3):
        offset = rng.normal(0, 0.05)
        for name, rate in (("none", 0.0), ("fast", 1e-4)):
            curve = _curve(rng, rate, offset)
            curve["rollouts_per_iteration"] = 128
            curve.to_csv(tmp_path / f"{name}-s{seed}.csv", index=False)
            gain = 0.1 * (name == "fast") + rng.normal(0, 0.005)
            pool = pd.DataFrame({"when": ["before"] * 4 + ["after"] * 4, "prompt_index": [0, 1] * 4,
                                 "reward": [0.3] * 4 + [0.3 + gain] * 4, "correct": [0.0] * 8})
            pool.to_csv(tmp_path / f"{name}-s{seed}.pool.csv", index=False)
    main(["summarise", str(tmp_path), "--plot", str(tmp_path / "curves.png")])
    out = capsys.readouterr().out
    curves, pool = out.split("Gain on the training pool")
    rows = {line.split("|")[1].strip(): line.split("|")[1:-1] for line in curves.splitlines() if line.startswith("| ")}
    assert set(rows) == {"row", "none", "fast"}
    gains = {line.split("|")[1].strip(): line.split("|")[1:-1] for line in pool.splitlines() if line.startswith("| ")}
    assert gains["fast"][3].strip().startswith("+0.1") and gains["fast"][4].strip() == "yes"  # learns on the pool
    assert gains["fast"][5].strip().startswith("+0.1") and gains["none"][4].strip() == "no"
    assert rows["fast"][4].strip() == "yes" and rows["none"][4].strip() == "no"  # learns
    assert rows["fast"][6].strip() == "yes"  # resolved against none, paired by seed
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="reference row 'nope'"):
        main(["summarise", str(tmp_path), "--reference", "nope"])
