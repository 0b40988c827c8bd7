"""Paired per-seed differences with a 95 % t-interval, and the test set's own standard error.

A seed pairs runs: every method at one seed sees the same partition, the same init of the shared
weights and the same test set, so X − Y per seed removes what the seeds share and the interval is
on the difference itself (a t-interval with n − 1 degrees of freedom over the paired seeds). The
runs log accuracies, not per-example predictions, so no per-example paired test (McNemar) is
possible; the test set's sampling error is reported beside each accuracy instead (:func:`sampling_se`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from rolora.lab.report.seeds import OverSeeds

LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """X − Y on each seed both have (fractions of accuracy), in seed order."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def interval(self, level: float = LEVEL) -> tuple[float, float] | None:
        """mean ± t_{(1+level)/2, n−1} · sd / √n; None below two paired seeds (no spread to judge by)."""
        if self.n < 2:
            return None
        half = stats.t.ppf((1 + level) / 2, self.n - 1) * statistics.stdev(self.values) / math.sqrt(self.n)
        return self.mean - half, self.mean + half


def paired(x: OverSeeds, y: OverSeeds) -> Difference:
    """X − Y over the seeds both finished (a seed only one of them has pairs with nothing and is left out)."""
    xs, ys = x.by_seed(), y.by_seed()
    common = sorted(set(xs) & set(ys))
    return Difference(tuple(common), tuple(xs[s] - ys[s] for s in common))


def sampling_se(accuracy: float, examples: int) -> float:
    """√(p(1 − p)/n): the binomial standard error of an accuracy measured on ``examples`` test examples
    (about 1.3 points at 1,000 examples and p ≈ 0.8) — the test set's own noise, whatever the seeds do."""
    return math.sqrt(accuracy * (1 - accuracy) / examples)
