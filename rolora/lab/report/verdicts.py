"""The rule that turns two methods' seed results into an outcome, and outcomes into a verdict.

The report states this rule in words (:func:`rule_text`) and every LM and toy verdict is computed by
it, never typed, so that a rerun with more seeds can change a verdict without anyone editing prose.

Pairwise outcome of a method X against a method Y at one setting: the paired per-seed differences
X − Y and their 95 % t-interval (:mod:`rolora.lab.report.paired`). For a win claim X is *ahead* when
the interval lies above 0, *behind* below 0, *underpowered* when it spans 0. For a tie claim the
interval is held to the paper's tie band: *tied* inside it, the tie *broken* (ahead or behind) wholly
outside it, *underpowered* across its edge. One paired seed gives no interval (*not judged*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from scipy import stats

from rolora.lab.report.paired import LEVEL, Difference, paired, sampling_se
from rolora.lab.report.seeds import OverSeeds

AHEAD, BEHIND, UNDERPOWERED = "ahead", "behind", "underpowered"
TIED, BROKEN_AHEAD, BROKEN_BEHIND = "tied", "tie broken: ahead", "tie broken: behind"
NO_INTERVAL, MISSING = "not judged (1 paired seed)", "not run"
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
COUNTED_ELSEWHERE = "judged in another claim"
"""Every pair of the claim is a twin of one an earlier claim already counts (the same runs)."""


@dataclass(frozen=True)
class Pair:
    """X against Y at one setting: the paired differences (fractions), the outcome, and the claim that
    already counts these runs (``counted_in``: twins are shown where they recur, counted once)."""

    x: str
    y: str
    diff: Difference | None
    outcome: str
    counted_in: str = ""

    @property
    def gap(self) -> float | None:
        return self.diff.mean if self.diff is not None and self.diff.n else None

    def interval(self) -> tuple[float, float] | None:
        return self.diff.interval() if self.diff is not None else None

    def detail(self) -> str:
        """'(+2.1 pts, 95 % CI [+0.3, +3.9], 3 seeds)' in accuracy points; '' when nothing was compared."""
        if self.gap is None:
            return ""
        ci = self.interval()
        if ci is None:
            return f" ({100 * self.gap:+.1f} pts, {self.diff.n} paired seed)"
        return (f" ({100 * self.gap:+.1f} pts, {round(100 * LEVEL)} % CI [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}], "
                f"{self.diff.n} seeds)")

    def text(self) -> str:
        twin = f" [twin runs: counted in {self.counted_in}]" if self.counted_in else ""
        return f"{self.y}: {self.outcome}{self.detail()}{twin}"

    def recounted(self, claim: str) -> Pair:
        return Pair(self.x, self.y, self.diff, self.outcome, claim)


def at_floor(x: OverSeeds, floor: float | None) -> bool:
    """Every seed within :data:`FLOOR_POINTS` of the majority-class accuracy ``floor`` (False if unknown)."""
    return floor is not None and x.n > 0 and all(abs(a - floor) <= FLOOR_POINTS + 1e-12 for a in x.values)


def outcome_of(ci: tuple[float, float], band: float | None) -> str:
    """A win pair (``band`` None): where the interval lies against 0; a tie pair: against ±``band``."""
    low, high = ci
    if band is None:
        return AHEAD if low > 0 else BEHIND if high < 0 else UNDERPOWERED
    if -band <= low and high <= band:
        return TIED
    return BROKEN_AHEAD if low > band else BROKEN_BEHIND if high < -band else UNDERPOWERED


def compare(x_name: str, x: OverSeeds | None, y_name: str, y: OverSeeds | None, floor: float | None = None,
            band: float | None = None) -> Pair:
    """The outcome of X against Y by the rule of this module (``floor``: the majority-class accuracy;
    ``band``: the tie band of a tie claim, in fractions; None for a win claim)."""
    diff = paired(x, y) if x is not None and y is not None else None
    if diff is None or diff.n == 0:
        return Pair(x_name, y_name, None, MISSING)
    if at_floor(x, floor) and at_floor(y, floor):
        return Pair(x_name, y_name, diff, AT_FLOOR)
    ci = diff.interval()
    return Pair(x_name, y_name, diff, NO_INTERVAL if ci is None else outcome_of(ci, band))


def beats_all(winner: str, results: Mapping[str, OverSeeds], baselines: list[str], floor: float | None = None,
              band: float | None = None) -> list[Pair]:
    """The winner against each baseline that has results (baselines without any are left out)."""
    return [compare(winner, results.get(winner), b, results[b], floor, band)
            for b in baselines if b in results and results[b].n]


def _judged(pairs: list[Pair]) -> list[Pair]:
    return [p for p in pairs if p.outcome != MISSING and not p.counted_in]


def _no_verdict(pairs: list[Pair], judged: list[Pair]) -> str | None:
    """NOT_RUN, COUNTED_ELSEWHERE or NOT_TESTABLE where the pairs leave nothing to judge; else None."""
    if not judged:
        return COUNTED_ELSEWHERE if any(p.counted_in for p in pairs) else NOT_RUN
    if all(p.outcome == AT_FLOOR for p in judged):
        return NOT_TESTABLE
    return None


def win_verdict(pairs: list[Pair], own_setting: bool = False) -> str:
    """'X beats every baseline': every interval above 0 reproduces it, any below 0 refutes it."""
    judged = _judged(pairs)
    early = _no_verdict(pairs, judged)
    if early:
        return early
    if any(p.outcome == BEHIND for p in judged):
        return NOT_REPRODUCED
    if all(p.outcome == AHEAD for p in judged):
        return REPRODUCED if own_setting else IN_KIND
    return INCONCLUSIVE


def tie_verdict(pairs: list[Pair], own_setting: bool = False) -> str:
    """'All methods tie': every interval inside the band reproduces it, any wholly outside refutes it."""
    judged = _judged(pairs)
    early = _no_verdict(pairs, judged)
    if early:
        return early
    if any(p.outcome in (BROKEN_AHEAD, BROKEN_BEHIND) for p in judged):
        return NOT_REPRODUCED
    if all(p.outcome == TIED for p in judged):
        return REPRODUCED if own_setting else IN_KIND
    return INCONCLUSIVE


def t_quantile(n: int) -> float:
    """The t multiplier of a 95 % interval over ``n`` paired seeds."""
    return float(stats.t.ppf((1 + LEVEL) / 2, n - 1))


_OLD_RULE_T = 1 / (2 / 3) ** 0.5
"""The old rule's threshold, gap > s (equal seed stds s, 3 seeds a side), in standard errors of the gap
s·√(2/3) of two independent means."""


def rule_text(tie_band_points: float, tie_band_source: str) -> str:
    """The rule in words, for the report's method section (its numbers computed, not typed)."""
    return "\n\n".join([
        "**Pairs.** Seeds pair the runs: at one seed every method gets the same data partition, the same initial "
        "weights and the same test set. For a method X against a method Y at one setting the statistic is the "
        "per-seed difference d_s = accuracy(X, s) − accuracy(Y, s) over the seeds both finished, with its "
        f"{round(100 * LEVEL)} % t-interval d̄ ± t·sd(d)/√n (n paired seeds, n − 1 degrees of freedom; t = "
        f"{t_quantile(3):.2f} at 3 seeds, {t_quantile(2):.1f} at 2). X is **ahead** when the whole interval is "
        "above 0, **behind** when it is below 0, and **underpowered** when it spans 0: the runs cannot tell "
        "the two apart, which is neither a win nor a loss. One paired seed gives no interval: **not judged**. "
        "Each pair gets its own 95 % interval, with no correction for the several baselines of a claim.",
        "**Claims.** A claim that X beats every baseline is **reproduced** (the paper's own setting) or "
        "**reproduced in kind** (a smaller stand-in setting) when every pair's interval is above 0, **not "
        "reproduced** when some pair's interval is below 0, and **inconclusive** otherwise (an interval spans "
        f"0, or a pair is not judged). A claim of a tie is held to the paper's own tie band, ±{tie_band_points:.1f} "
        f"points ({tie_band_source}): **reproduced (in kind)** when every pair's interval lies inside the band, "
        "**not reproduced** when some pair's interval lies wholly outside it (the tie is *broken*, and the "
        "report says which way: RoLoRA ahead or behind, by how much), and **inconclusive** otherwise (an "
        "interval crosses the band's edge: underpowered).",
        "**Each run counted once.** Some sweeps reuse another sweep's runs of the same config (twins: copied "
        "from it, or run again with the same config and seed, which gives the same numbers). A pair whose runs "
        "an earlier claim of this report already judges is shown where it recurs, marked as a twin, and counts "
        "only in that earlier claim's verdict; each sweep says which of its cells are twins.",
        "**Nothing learned.** A pair whose two methods both end with every seed within 1 point of the "
        "majority-class accuracy (always answering the test split's most common label) is **both at the "
        "majority class** and not judged: neither model learned the task there; a claim whose every pair is "
        "so is **not testable here** at that scale.",
        "**What the intervals leave out.** The runs log each round's accuracy, not per-example predictions, so "
        "a per-example paired test on the shared test set (McNemar's) is not possible. Each accuracy shows the "
        "test set's own standard error √(p(1 − p)/n) beside it (n test examples): the noise of a finite test "
        f"set alone ({100 * sampling_se(0.75, 1000):.1f} points at 1,000 examples and p = 0.75), as large as many of "
        "the effects here. A paired "
        "difference on one shared test set cancels part of it; the seed-to-seed spread of d_s includes the "
        "rest. This rule replaces an earlier one (gap of the means > the pooled seed standard deviation), "
        f"which at 3 seeds a side is {_OLD_RULE_T:.2f} standard errors of the gap (one-sided p ≈ "
        f"{stats.t.sf(_OLD_RULE_T, 4):.2f}) and ignored the pairing.",
    ])
