"""Rate statistics of a gradient-norm experiment and their log-log slopes against the horizon T.

The non-convex rate experiment (``rolora.theory.analyses.nonconvex_rate``) runs stochastic RoLoRA
for several horizons T (step size ∝ 1/√T) and records, per run, two statistics of the curve
g_0..g_T = ‖∇F‖² at each round:

- the running minimum min_{t≤T} g_t, and
- the round average (1/(T+1)) Σ_t g_t.

They are not the same claim. A bound of the O(1/√T) kind is proven for the average (the telescoped
descent inequality bounds Σ_t E g_t), and the minimum inherits it because min ≤ average. But the
minimum of a *noisy* curve also falls because it picks the luckiest of T rounds, so its slope can be
much steeper than the level the curve actually settles at. The report shows both slopes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from rolora.theory.stochastic import loglog_slope

STATISTICS = ("min", "mean")


def running_min(curve: Sequence[float]) -> float:
    """min_t g_t over the whole run."""
    return float(np.min(curve))


def round_average(curve: Sequence[float]) -> float:
    """(1/len) Σ_t g_t over the whole run (round 0 included, as the theory experiment records it)."""
    return float(np.mean(curve))


def statistic_of(curve: Sequence[float], statistic: str) -> float:
    if statistic == "min":
        return running_min(curve)
    if statistic == "mean":
        return round_average(curve)
    raise ValueError(f"unknown statistic {statistic!r}; expected one of {STATISTICS}")


def slope(values_by_horizon: Mapping[int, Sequence[float]]) -> float:
    """Log-log slope of the seed-mean value against T, from {T: [value per seed]}."""
    horizons = sorted(values_by_horizon)
    means = [float(np.mean(values_by_horizon[T])) for T in horizons]
    return loglog_slope(np.asarray(horizons, float), np.asarray(means))[0]


def per_seed_slopes(values_by_horizon: Mapping[int, Sequence[float]]) -> list[float]:
    """The slope fitted to each seed's own values (seed j = the j-th value at every T)."""
    horizons = sorted(values_by_horizon)
    n = min(len(values_by_horizon[T]) for T in horizons)
    return [loglog_slope(np.asarray(horizons, float), np.asarray([values_by_horizon[T][j] for T in horizons]))[0]
            for j in range(n)]


def curve_slopes(curves_by_horizon: Mapping[int, Sequence[Sequence[float]]]) -> dict[str, float]:
    """Both statistics' slopes from whole curves: {T: [curve per seed]} -> {"min": s, "mean": s}."""
    return {stat: slope({T: [statistic_of(c, stat) for c in curves] for T, curves in curves_by_horizon.items()})
            for stat in STATISTICS}
