"""Numbers over seeds: mean, sample standard deviation and how many seeds there were.

A cell with one seed has no spread; it says so (``std`` is None) rather than showing ± 0, so a
reader never takes a single run for a tight one.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class OverSeeds:
    """``values`` of one quantity, one per finished seed (in seed order)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n − 1); None below two seeds."""
        return statistics.stdev(self.values) if self.n >= 2 else None

    def short(self, scale: float = 100.0, digits: int = 1) -> str:
        """'83.0 ± 0.5', '74.2 (1 seed)' or '–': :meth:`text` without the seed count."""
        if not self.values:
            return "–"
        mean = f"{self.mean * scale:.{digits}f}"
        return f"{mean} (1 seed)" if self.std is None else f"{mean} ± {self.std * scale:.{digits}f}"

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """'83.0 ± 0.5 (n=2)', '74.2 (n=1, no std)', or '–' with no seeds (values × ``scale``)."""
        if not self.values:
            return "–"
        mean = f"{self.mean * scale:.{digits}f}"
        if self.std is None:
            return f"{mean} (n=1, no std)"
        return f"{mean} ± {self.std * scale:.{digits}f} (n={self.n})"


def over_seeds(values: Sequence[float]) -> OverSeeds:
    return OverSeeds(tuple(float(v) for v in values))


def pooled_std(a: OverSeeds, b: OverSeeds) -> float | None:
    """sqrt((s_a² + s_b²) / 2): the seeds' spread two means are judged against (None without both)."""
    if a.std is None or b.std is None:
        return None
    return math.sqrt((a.std**2 + b.std**2) / 2)
