"""RoLoRA's alternation schedule: which LoRA factor every client trains in round t."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Factor = Literal["A", "B"]


@dataclass(frozen=True)
class AlternationSchedule:
    """Alternate the trained factor every ``period`` rounds, starting with ``start``.

    Parameters
    ----------
    period:
        Rounds spent on one factor before switching (paper: 1).
    start:
        Factor trained in round 1 (paper: "B"; with B = 0 at init the gradient of A is 0, so
        starting with "A" wastes the first phase; allowed for experiments).
    ffa_after:
        Optional fraction in (0, 1]: after round floor(ffa_after · total_rounds) only B trains
        (hand-over to FFA-LoRA, the paper's "RoLoRA for the first 20% of rounds" ablation).
        Needs ``total_rounds``. Default: off.
    total_rounds:
        Total number of rounds of the run (only used with ``ffa_after``).
    """

    period: int = 1
    start: Factor = "B"
    ffa_after: float | None = None
    total_rounds: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"period must be an int >= 1, got {self.period!r}")
        if self.start not in ("A", "B"):
            raise ValueError(f"start must be 'A' or 'B', got {self.start!r}")
        if self.ffa_after is not None:
            if not (isinstance(self.ffa_after, (int, float)) and 0 < self.ffa_after <= 1):
                raise ValueError(f"ffa_after must be a fraction in (0, 1], got {self.ffa_after!r}")
            if not isinstance(self.total_rounds, int) or self.total_rounds < 1:
                raise ValueError(
                    f"ffa_after={self.ffa_after} needs total_rounds (an int >= 1), got {self.total_rounds!r}"
                )

    @property
    def last_alternating_round(self) -> int | None:
        """The last round that alternates before the hand-over to FFA-LoRA (None: never hands over)."""
        if self.ffa_after is None:
            return None
        return math.floor(self.ffa_after * self.total_rounds)  # type: ignore[operator]

    def factor(self, t: int) -> Factor:
        """The factor trained (and uploaded) in round t >= 1."""
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"round must be an int >= 1, got {t!r}")
        last = self.last_alternating_round
        if last is not None and t > last:
            return "B"
        other: Factor = "A" if self.start == "B" else "B"
        return self.start if ((t - 1) // self.period) % 2 == 0 else other
