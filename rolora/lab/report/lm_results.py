"""The LM cells (rows of ``lm-cells.csv``) grouped as the report reads them.

Only main-phase cells count as results (lr-selection cells chose the learning rate and are shown
only in the cost). A cell's final test accuracy counts when its status is ``done``; partial,
pending and failed cells are counted, per setting and method, so a table says what is missing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

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

    def accuracy(self) -> OverSeeds:
        return over_seeds([a for _, a in sorted(self.seeds)])

    def at_floor(self) -> bool:
        """Every finished seed at the majority-class floor (:func:`rolora.lab.report.verdicts.at_floor`)."""
        return at_floor(self.accuracy(), self.floor)

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


def group_cells(rows: list[dict[str, str]]) -> dict[str, SweepResults]:
    """{sweep name: its results} from the rows of ``lm-cells.csv``."""
    out: dict[str, SweepResults] = {}
    for row in rows:
        if row["phase"] != "main":
            continue
        sweep = out.setdefault(row["sweep"], SweepResults(row["sweep"], {}, {}))
        sweep.axes[row["setting"]] = json.loads(row["axes"] or "{}")
        group = sweep.groups.setdefault(row["setting"], {}).setdefault(row["method"], Group())
        accuracy = number(row["final_test_accuracy"])
        majority = number(row.get("test_majority"))
        if majority is not None:
            group.floor = majority
        if row["status"] == "done" and accuracy is not None:
            group.seeds.append((int(number(row["seed"]) or 0), accuracy))
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
