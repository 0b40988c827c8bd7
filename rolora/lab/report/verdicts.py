"""The rule that turns two sets of seed results into an outcome, and outcomes into a verdict.

The report states this rule in words (:data:`RULE`) and every LM and toy verdict is computed by it,
never typed, so that a rerun with more seeds can change a verdict without anyone editing prose.

Pairwise outcome of a method X against a method Y at one setting (accuracies over finished seeds):
the gap is mean(X) − mean(Y) and the spread is the pooled seed std (:func:`seeds.pooled_std`);
X is *ahead* when gap > spread, *behind* when −gap > spread, *within spread* otherwise; with fewer
than two seeds on either side there is no spread and the outcome is *no spread* (not judged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from rolora.lab.report.seeds import OverSeeds, pooled_std

AHEAD, BEHIND, WITHIN, NO_SPREAD, MISSING = "ahead", "behind", "within spread", "no spread (1 seed)", "not run"
AT_FLOOR = "both at the majority class"
FLOOR_POINTS = 0.01
"""A method is *at the floor* when every seed's accuracy lies within this (1 point) of the majority-class
accuracy: it has learned nothing, and a pair of such methods is not judged."""

REPRODUCED = "reproduced"
IN_KIND = "reproduced in kind"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_RUN = "not run yet"
NOT_TESTABLE = "not testable here"

RULE = (
    "For a method X against a method Y at one setting, gap = mean(X) − mean(Y) over finished seeds and "
    "spread = sqrt((std(X)² + std(Y)²)/2), the pooled seed standard deviation. X is **ahead** when gap > "
    "spread, **behind** when −gap > spread, **within spread** otherwise; with one seed on either side there "
    "is no spread and the pair is not judged. A claim that X beats every baseline is **reproduced** (the "
    "paper's own setting) or **reproduced in kind** (a smaller stand-in setting) when X is ahead of every "
    "baseline present, **not reproduced** when X is behind any of them, and **inconclusive** otherwise "
    "(a pair within spread or not judged). A claim of a tie is reproduced (in kind) when every pair is "
    "within spread and not reproduced when any pair is ahead or behind. A pair whose two methods both end "
    "with every seed within 1 point of the majority-class accuracy (always answering the test split's most "
    "common label) is **both at the majority class** and not judged: neither model learned the task there; "
    "a claim whose every pair is so is **not testable here** at that scale."
)


@dataclass(frozen=True)
class Pair:
    """X against Y at one setting: the gap of the means (fractions), the spread, the outcome."""

    x: str
    y: str
    gap: float | None
    spread: float | None
    outcome: str

    def detail(self) -> str:
        """'(+2.1 pts, spread 0.4)' in accuracy points; '' when nothing was compared."""
        if self.gap is None:
            return ""
        if self.spread is None:
            return f" ({100 * self.gap:+.1f} pts)"
        return f" ({100 * self.gap:+.1f} pts, spread {100 * self.spread:.1f})"

    def text(self) -> str:
        return f"{self.y}: {self.outcome}{self.detail()}"


def at_floor(x: OverSeeds, floor: float | None) -> bool:
    """Every seed within :data:`FLOOR_POINTS` of the majority-class accuracy ``floor`` (False if unknown)."""
    return floor is not None and x.n > 0 and all(abs(a - floor) <= FLOOR_POINTS + 1e-12 for a in x.values)


def compare(x_name: str, x: OverSeeds | None, y_name: str, y: OverSeeds | None, floor: float | None = None) -> Pair:
    """The outcome of X against Y by the rule of this module (``floor``: the majority-class accuracy)."""
    if x is None or y is None or x.n == 0 or y.n == 0:
        return Pair(x_name, y_name, None, None, MISSING)
    gap = x.mean - y.mean
    spread = pooled_std(x, y)
    if at_floor(x, floor) and at_floor(y, floor):
        return Pair(x_name, y_name, gap, spread, AT_FLOOR)
    if spread is None:
        return Pair(x_name, y_name, gap, None, NO_SPREAD)
    outcome = AHEAD if gap > spread else BEHIND if -gap > spread else WITHIN
    return Pair(x_name, y_name, gap, spread, outcome)


def beats_all(winner: str, results: Mapping[str, OverSeeds], baselines: list[str], floor: float | None = None
              ) -> list[Pair]:
    """The winner against each baseline that has results (baselines without any are left out)."""
    return [compare(winner, results.get(winner), b, results[b], floor) for b in baselines if b in results and results[b].n]


def _floor_only(judged: list[Pair]) -> bool:
    return bool(judged) and all(p.outcome == AT_FLOOR for p in judged)


def win_verdict(pairs: list[Pair], own_setting: bool = False) -> str:
    """'X beats every baseline' from its pairs: the rule of :data:`RULE`."""
    judged = [p for p in pairs if p.outcome != MISSING]
    if not judged:
        return NOT_RUN
    if _floor_only(judged):
        return NOT_TESTABLE
    if any(p.outcome == BEHIND for p in judged):
        return NOT_REPRODUCED
    if all(p.outcome == AHEAD for p in judged):
        return REPRODUCED if own_setting else IN_KIND
    return INCONCLUSIVE


def tie_verdict(pairs: list[Pair], own_setting: bool = False) -> str:
    """'All methods tie' from its pairs: reproduced when every judged pair is within spread."""
    judged = [p for p in pairs if p.outcome != MISSING]
    if not judged:
        return NOT_RUN
    if _floor_only(judged):
        return NOT_TESTABLE
    if any(p.outcome in (AHEAD, BEHIND) for p in judged):
        return NOT_REPRODUCED
    if all(p.outcome == WITHIN for p in judged):
        return REPRODUCED if own_setting else IN_KIND
    return INCONCLUSIVE
