"""What a results folder already records of a sweep: ``rolora sweep --recorded DIR``.

Run folders (``runs/``) are not committed; the report's CSVs (``docs/reproduction/``, written by
``rolora report``) are. In a fresh checkout a sweep would otherwise run again every cell done
elsewhere, its lr phase included. With ``--recorded docs/reproduction`` a cell that the CSVs hold as
done, for the same spec word for word, has status ``recorded`` and is not run; a method whose lr cells
are all done or recorded takes the recorded lr choice. A main cell whose config equals that of a cell
another sweep's rows hold as done (its twin: clients-50's runs recur in handover, local-steps,
fewer-params and clients-50-long-lr) is ``recorded`` too, borrowing that cell's rows
(:mod:`rolora.lab.sweep.twins` for twins in sibling run folders). ``rolora report`` then keeps those
cells' committed rows, and fills a borrowing cell's from its twin's (:mod:`rolora.lab.report.sweep_merge`).
The files are read as plain CSV (this package does not import the report); the columns used are ``sweep``, ``spec`` (lm-sweeps.csv), ``cell``, ``status``
(lm-cells.csv), ``method``, ``metric``, ``chosen``, ``grid``, ``scores`` (lm-lr-choice.csv).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rolora.llm.config import ConfigError
from rolora.lab.sweep.spec import SPECS_DIR, cell_config, main_cells, parse_spec
from rolora.lab.sweep.twins import config_key

RECORDED = "recorded"
FILES = ("lm-sweeps.csv", "lm-cells.csv", "lm-lr-choice.csv")


@dataclass(frozen=True)
class Recorded:
    """Cell ids done in the results folder, and the lr choices made there (by method label)."""

    cells: frozenset[str] = frozenset()
    lr_choice: dict[str, dict] = field(default_factory=dict)
    twins: dict[str, str] = field(default_factory=dict)
    """{config key: "sweep/cell"} of the main cells other sweeps' rows hold as done."""


def _all_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _rows(path: Path, name: str) -> list[dict[str, str]]:
    return [r for r in _all_rows(path) if r.get("sweep") == name]


def read_recorded(folder: Path, name: str, spec_raw: dict) -> Recorded:
    """The sweep ``name``'s recorded cells and lr choices in ``folder``; nothing when it has no row for
    that sweep, or when its rows come from another spec (they belong to a different experiment: said on
    stderr). Other sweeps' done main cells count as twins either way."""
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"--recorded {folder}: {', '.join(missing)} not found (the folder `rolora report` writes)")
    sweeps = _rows(folder / "lm-sweeps.csv", name)
    twins = other_sweeps_cells(folder, name)
    if not sweeps:
        return Recorded(twins=twins)
    if sweeps[0]["spec"] != json.dumps(spec_raw, sort_keys=True):
        # Its own rows belong to another experiment (the report drops them too); twins stay valid: a twin
        # is matched on the cell's whole config, not on this sweep's spec.
        print(f"--recorded {folder}: its {name!r} rows come from a different spec than this one: none of its "
              f"cells or lr choices is reused; only other sweeps' cells of the same config are", file=sys.stderr)
        return Recorded(twins=twins)
    cells = frozenset(r["cell"] for r in _rows(folder / "lm-cells.csv", name) if r["status"] == "done")
    return Recorded(cells, _lr_choices(folder, name), twins)


def _lr_choices(folder: Path, name: str) -> dict[str, dict]:
    """The lr selections recorded for the sweep ``name`` (not the lrs its spec fixes), by method label."""
    lr_choice = {}
    for r in _rows(folder / "lm-lr-choice.csv", name):
        if r["chosen"] and json.loads(r["grid"] or "[]"):  # a selection, not an lr fixed in the spec
            lr_choice[r["method"]] = {"grid": json.loads(r["grid"]), "metric": r["metric"],
                                      "scores": json.loads(r["scores"] or "{}"), "chosen": float(r["chosen"]),
                                      "selected_at": {"recorded": str(folder)}}
    return lr_choice


def other_sweeps_cells(folder: Path, name: str) -> dict[str, str]:
    """{config key: "sweep/cell"} of the done main cells the CSVs record for sweeps other than ``name``,
    their configs rebuilt from each sweep's recorded spec (resolved against the shipped experiments) and
    lr choices. A sweep whose spec no longer loads here (a base config gone, a key renamed) gives none."""
    done: dict[str, set[str]] = {}
    for r in _all_rows(folder / "lm-cells.csv"):
        if r["sweep"] != name and r["phase"] == "main" and r["status"] == "done":
            done.setdefault(r["sweep"], set()).add(r["cell"])
    twins: dict[str, str] = {}
    for sweep, raw in [(r["sweep"], r["spec"]) for r in _all_rows(folder / "lm-sweeps.csv") if r["sweep"] in done]:
        try:
            spec = parse_spec(json.loads(raw), sweep, SPECS_DIR, f"{folder}: {sweep}'s recorded spec")
            chosen = {m: c["chosen"] for m, c in _lr_choices(folder, sweep).items()}
            for cell in main_cells(spec, chosen):
                if cell.id in done[sweep] and cell.labels["lr"] is not None:
                    twins.setdefault(config_key(cell_config(spec, cell)), f"{sweep}/{cell.id}")
        except (ConfigError, ValueError):
            continue
    return twins
