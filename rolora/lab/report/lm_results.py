"""The LM cells (rows of ``lm-cells.csv``) grouped as the report reads them.

Only main-phase cells count as results (lr-selection cells chose the learning rate and are shown
only in the cost). A cell's final test accuracy counts when its status is ``done``; partial,
pending and failed cells are counted, per setting and method, so a table says what is missing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rolora.lab.report.csv_files import number
from rolora.lab.report.seeds import OverSeeds, over_seeds
from rolora.lab.report.verdicts import at_floor


@dataclass
class Group:
    """One (setting, method) of a sweep: finished seeds' final accuracies and what is unfinished."""

    seeds: list[tuple[int, float]] = field(default_factory=list)
    unfinished: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    floor: float | None = None
    """The test split's majority-class accuracy (None where unknown: rows extracted before it was recorded)."""
    cells: dict[int, str] = field(default_factory=dict)
    """{seed: "sweep/cell"} of the finished seeds (what a twin is matched on)."""
    config: Any = None
    """A cell's RunConfig, rebuilt from its sweep's spec (None where the spec does not expand): what the
    group ran, for the test set's size and the local work per round."""
    gaps: list[tuple[float | None, float | None, int | None]] = field(default_factory=list)
    """Each finished seed's (mean product gap, mean client drift, rounds that logged them); rounds None:
    the cell predates the gap logging."""
    privacy: list[tuple[float | None, float | None]] = field(default_factory=list)
    """Each finished seed's (final ε, δ) of differential privacy, in the order of ``seeds``: (None, None)
    for a run without DP or a row extracted before ε was recorded; ε ``inf``: DP without noise."""

    def accuracy(self) -> OverSeeds:
        ordered = sorted(self.seeds)
        return over_seeds([a for _, a in ordered], [s for s, _ in ordered])

    def at_floor(self) -> bool:
        """Every finished seed at the majority-class floor (:func:`rolora.lab.report.verdicts.at_floor`)."""
        return at_floor(self.accuracy(), self.floor)

    def test_examples(self) -> int | None:
        """The test set's size in examples (None where unknown, or given as a fraction of the data)."""
        size = getattr(getattr(self.config, "data", None), "test_size", None)
        return int(size) if size is not None and size >= 1 else None

    def missing_text(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(self.unfinished.items()) if n) or ""


@dataclass
class SweepResults:
    """A sweep's main-phase groups, keyed setting -> method, settings in their natural order."""

    name: str
    groups: dict[str, dict[str, Group]]
    axes: dict[str, dict]

    def settings(self) -> list[str]:
        return sorted(self.groups, key=lambda s: _order(self.axes[s]))

    def methods(self) -> list[str]:
        return sorted({m for g in self.groups.values() for m in g}, key=method_order)

    def accuracies(self, setting: str) -> dict[str, OverSeeds]:
        return {m: g.accuracy() for m, g in self.groups.get(setting, {}).items()}

    def floor(self, setting: str) -> float | None:
        """The setting's majority-class test accuracy (its cells share one test split), if recorded."""
        return next((g.floor for g in self.groups.get(setting, {}).values() if g.floor is not None), None)


def _order(axes: dict) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for _, v in sorted(axes.items()))


METHOD_ORDER = ("rolora", "fedavg-lora", "ffa-lora", "flexlora", "galore-fedavg", "fedavg-full-adam", "centralised")


def method_order(m: str) -> tuple:
    return (METHOD_ORDER.index(m), m) if m in METHOD_ORDER else (len(METHOD_ORDER), m)


def group_cells(rows: list[dict[str, str]], configs: dict[str, Any] | None = None) -> dict[str, SweepResults]:
    """{sweep name: its results} from the rows of ``lm-cells.csv``; ``configs``: {"sweep/cell": RunConfig}
    where the sweep's spec expands (:mod:`rolora.lab.report.sweep_specs`)."""
    out: dict[str, SweepResults] = {}
    for row in rows:
        if row["phase"] != "main":
            continue
        sweep = out.setdefault(row["sweep"], SweepResults(row["sweep"], {}, {}))
        sweep.axes[row["setting"]] = json.loads(row["axes"] or "{}")
        group = sweep.groups.setdefault(row["setting"], {}).setdefault(row["method"], Group())
        if group.config is None:
            group.config = (configs or {}).get(f"{row['sweep']}/{row['cell']}")
        accuracy = number(row["final_test_accuracy"])
        majority = number(row.get("test_majority"))
        if majority is not None:
            group.floor = majority
        if row["status"] == "done" and accuracy is not None:
            seed = int(number(row["seed"]) or 0)
            group.seeds.append((seed, accuracy))
            group.cells[seed] = f"{row['sweep']}/{row['cell']}"
            rounds = number(row.get("gap_rounds"))
            group.gaps.append((number(row.get("mean_product_gap")), number(row.get("mean_client_drift")),
                               None if rounds is None else int(rounds)))
            group.privacy.append((number(row.get("final_dp_epsilon")), number(row.get("dp_delta"))))
        else:
            group.unfinished[row["status"] if row["status"] != "done" else "done without a test score"] += 1
    return out


def cost_seconds(rows: list[dict[str, str]], sweep: str | None = None) -> float:
    """Training wall time summed over the metrics rows of every cell (all phases, any status); a cell copied
    from another sweep's run counts there only."""
    return sum(number(r["wall_s"]) or 0.0 for r in rows
               if (sweep is None or r["sweep"] == sweep) and not r.get("copied_from"))


def devices(rows: list[dict[str, str]]) -> list[str]:
    return sorted({r["device"] for r in rows if r["device"]})
