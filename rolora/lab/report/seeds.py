"""Numbers over seeds: mean, sample standard deviation and how many seeds there were.

A cell with one seed has no spread; it says so (``std`` is None) rather than showing ± 0, so a
reader never takes a single run for a tight one. Each value keeps its seed, because a seed pairs
runs: the same seed gives every method the same partition and init (:mod:`rolora.lab.report.paired`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class OverSeeds:
    """``values`` of one quantity, one per finished seed (in seed order); ``seeds`` names them."""

    values: tuple[float, ...]
    seeds: tuple[int, ...] = ()
    """The seed of each value (empty: 0, 1, 2, ... in order)."""

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds or range(len(self.values)), self.values))

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

    def text(self, scale: float = 100.0, digits: int = 1, note: str = "") -> str:
        """'83.0 ± 0.5 (n=2)', '74.2 (n=1, no std)', or '–' with no seeds (values × ``scale``); ``note``
        goes inside the brackets ('83.0 ± 0.5 (n=2; test SE 1.2)')."""
        if not self.values:
            return "–"
        mean = f"{self.mean * scale:.{digits}f}"
        more = f"; {note}" if note else ""
        if self.std is None:
            return f"{mean} (n=1, no std{more})"
        return f"{mean} ± {self.std * scale:.{digits}f} (n={self.n}{more})"


def over_seeds(values: Sequence[float], seeds: Sequence[int] | None = None) -> OverSeeds:
    return OverSeeds(tuple(float(v) for v in values), tuple(int(s) for s in seeds) if seeds is not None else ())
