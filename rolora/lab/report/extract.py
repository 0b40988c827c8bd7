"""Step 1 of the report: every source becomes a CSV under the data folder (``docs/reproduction/``).

The CSVs are committed, so ``rolora report --from-csv`` can rebuild the report from them alone, and
a new extraction only replaces what its sources cover: the rows of each sweep found (a sweep whose
folder is absent here keeps its committed rows, and so does a cell of a found sweep that is not done
here but was done before: a sweep resumed in a fresh checkout with ``--recorded`` or ``--only``),
the theory rows when ``out/theory`` holds a run (else the committed ones stay), and the memory counts
(recomputed, they are the same everywhere).
The toy results are already committed CSVs and are read where they are.
"""

from __future__ import annotations

from pathlib import Path

from rolora.lab.report.csv_files import read_rows, write_rows
from rolora.lab.report.majority import majority_accuracy
from rolora.lab.report.memory_data import MEMORY_FIELDS, memory_rows
from rolora.lab.report.sweep_merge import fill_borrowed, merge_sweep
from rolora.lab.report.sweep_reader import (CELL_FIELDS, CURVE_FIELDS, LR_CURVE_FIELDS, LR_FIELDS, SWEEP_FIELDS,
                                         find_sweeps, read_sweep)
from rolora.lab.report.theory_data import (COMPARISON_FIELDS, FLOOR_FIELDS, RATE_FIELDS, THEOREM_FIELDS,
                                        has_theory, theory_rows)

LM_FILES = {"lm-sweeps.csv": SWEEP_FIELDS, "lm-cells.csv": CELL_FIELDS, "lm-curves.csv": CURVE_FIELDS,
            "lm-lr-choice.csv": LR_FIELDS, "lm-lr-curves.csv": LR_CURVE_FIELDS}
"""In read_sweep's order of row lists (the sweep's row first)."""
THEORY_FILES = {"theory-theorem.csv": ("theorem", THEOREM_FIELDS), "theory-ffa-floor.csv": ("ffa_floor", FLOOR_FIELDS),
                "theory-comparison.csv": ("comparison", COMPARISON_FIELDS),
                "theory-nonconvex-rate.csv": ("nonconvex_rate", RATE_FIELDS)}
MEMORY_FILE = "memory.csv"


def extract_sweeps(sweeps_root: Path, data_dir: Path, keep_absent: bool = True) -> list[Path]:
    """Replace the rows of every sweep found under ``sweeps_root``, except that a cell not done here keeps
    its committed rows when they say done (same spec: see sweep_merge); keep the other sweeps' rows. With
    ``keep_absent=False`` drop both: only what the folders hold stays (a deleted sweep leaves the report)."""
    committed = [read_rows(data_dir / name) for name in LM_FILES]
    found: dict[str, list[list[dict]]] = {}
    for folder in find_sweeps(sweeps_root):
        sweep, *rows = read_sweep(folder, majority_accuracy)
        found[sweep["sweep"]] = [[sweep], *rows]
        if keep_absent:
            before = [[r for r in rows_of_file if r["sweep"] == sweep["sweep"]] for rows_of_file in committed]
            found[sweep["sweep"]], carried = merge_sweep(found[sweep["sweep"]], before)
            if carried:
                print(f"{sweep['sweep']}: {len(carried)} cell(s) not done in {folder} kept from the committed CSVs")
        borrowed = fill_borrowed(found[sweep["sweep"]], committed)
        if borrowed:
            print(f"{sweep['sweep']}: {len(borrowed)} cell(s) filled from their twins' committed rows (the same config)")
    written = []
    for i, (name, fields) in enumerate(LM_FILES.items()):
        kept = [r for r in committed[i] if r["sweep"] not in found] if keep_absent else []
        new = [r for parts in found.values() for r in parts[i]]
        rows = sorted(kept + new, key=lambda r: r["sweep"])  # stable: each sweep's rows keep their order
        written.append(write_rows(data_dir / name, fields, rows))
    return written


def extract_theory(theory_dir: Path, data_dir: Path) -> list[Path]:
    """Rewrite the theory CSVs from ``theory_dir`` when it holds a ``rolora theory`` run (else keep them)."""
    if not has_theory(theory_dir):
        return []
    rows = theory_rows(theory_dir)
    return [write_rows(data_dir / name, fields, rows[key]) for name, (key, fields) in THEORY_FILES.items()]


def extract(sweeps_root: Path, theory_dir: Path, data_dir: Path, keep_absent: bool = True) -> list[Path]:
    """Every source into ``data_dir``; returns the paths written."""
    data_dir = Path(data_dir)
    written = extract_sweeps(Path(sweeps_root), data_dir, keep_absent) + extract_theory(Path(theory_dir), data_dir)
    return written + [write_rows(data_dir / MEMORY_FILE, MEMORY_FIELDS, memory_rows())]
