"""Each pair of runs counts in one claim: the first claim of the report that judges it.

Sweeps share runs on purpose (clients-50's cells recur in clients-50-extra, fewer-params, local-steps
and handover; clients' 3-client RoLoRA and FlexLoRA in clients-lr3), so that each sweep's tables are
whole. Judged again, the same runs would vote in several verdicts as if they were new evidence. A
pair is known by the runs on its two sides, seed by seed (a run by its twin identity,
:func:`rolora.lab.report.sweep_specs.identities`); where it recurs it is shown, marked with the claim
that counts it, and left out of the verdict.
"""

from __future__ import annotations

from rolora.lab.report.lm_results import Group
from rolora.lab.report.verdicts import Pair


class Ledger:
    """The claims' shared record of which pairs of runs are counted where (claims in report order)."""

    def __init__(self, identity: dict[str, str] | None = None):
        self.identity = identity or {}
        self.owner: dict[tuple, str] = {}

    def run(self, cell: str) -> str:
        return self.identity.get(cell, cell)

    def key(self, pair: Pair, x: Group, y: Group) -> tuple | None:
        """The pair's runs, seed by seed (None for a pair with no paired seed)."""
        if pair.diff is None or not pair.diff.n:
            return None
        return tuple(sorted((self.run(x.cells[s]), self.run(y.cells[s])) for s in pair.diff.seeds))

    def count(self, pair: Pair, x: Group, y: Group, claim: str) -> Pair:
        """``pair`` counted in ``claim``, or marked with the claim that counted its runs first."""
        key = self.key(pair, x, y)
        if key is None:
            return pair
        owner = self.owner.setdefault(key, claim)
        return pair if owner == claim else pair.recounted(owner)

    def twins_of(self, cells: dict[int, str]) -> set[str]:
        """The other sweeps whose runs these cells are (the sweep of each run's identity, when not its own)."""
        return {self.run(c).split("/")[0] for c in cells.values() if self.run(c) != c}
