"""What a results folder already records of a sweep: ``rolora llm sweep --recorded DIR``.

Run folders (``runs/``) are not committed; the report's CSVs (``docs/reproduction/``, written by
``rolora report``) are. In a fresh checkout a sweep would otherwise run again every cell done
elsewhere, its lr phase included. With ``--recorded docs/reproduction`` a cell that the CSVs hold as
done, for the same spec word for word, has status ``recorded`` and is not run; a method whose lr cells
are all done or recorded takes the recorded lr choice. ``rolora report`` then keeps those cells'
committed rows (:mod:`rolora.reports.sweep_merge`). The files are read as plain CSV (this package does
not import the report); the columns used are ``sweep``, ``spec`` (lm-sweeps.csv), ``cell``, ``status``
(lm-cells.csv), ``method``, ``metric``, ``chosen``, ``grid``, ``scores`` (lm-lr-choice.csv).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from rolora.llm.config import ConfigError

RECORDED = "recorded"
FILES = ("lm-sweeps.csv", "lm-cells.csv", "lm-lr-choice.csv")


@dataclass(frozen=True)
class Recorded:
    """Cell ids done in the results folder, and the lr choices made there (by method label)."""

    cells: frozenset[str] = frozenset()
    lr_choice: dict[str, dict] = field(default_factory=dict)


def _rows(path: Path, name: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("sweep") == name]


def read_recorded(folder: Path, name: str, spec_raw: dict) -> Recorded:
    """The sweep ``name``'s recorded cells and lr choices in ``folder``; nothing when it has no row for
    that sweep. A row for another spec is an error: its cells belong to a different experiment."""
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"--recorded {folder}: {', '.join(missing)} not found (the folder `rolora report` writes)")
    sweeps = _rows(folder / "lm-sweeps.csv", name)
    if not sweeps:
        return Recorded()
    if sweeps[0]["spec"] != json.dumps(spec_raw, sort_keys=True):
        raise ConfigError(f"--recorded {folder}: its {name!r} rows come from a different spec than this one; "
                          "run without --recorded (the report would drop those rows anyway)")
    cells = frozenset(r["cell"] for r in _rows(folder / "lm-cells.csv", name) if r["status"] == "done")
    lr_choice = {}
    for r in _rows(folder / "lm-lr-choice.csv", name):
        if r["chosen"] and json.loads(r["grid"] or "[]"):  # a selection, not an lr fixed in the spec
            lr_choice[r["method"]] = {"grid": json.loads(r["grid"]), "metric": r["metric"],
                                      "scores": json.loads(r["scores"] or "{}"), "chosen": float(r["chosen"]),
                                      "selected_at": {"recorded": str(folder)}}
    return Recorded(cells, lr_choice)
