"""Step 1 of the report: every source becomes a CSV under the data folder (``docs/reproduction/``).

The CSVs are committed, so ``rolora report --from-csv`` can rebuild the report from them alone. Each
file is rewritten whole from its source (an absent source gives a header-only file, which the report
shows as "not run yet"); the toy results are already committed CSVs and are read where they are.
"""

from __future__ import annotations

from pathlib import Path

from rolora.reports.csv_files import write_rows
from rolora.reports.memory_data import MEMORY_FIELDS, memory_rows
from rolora.reports.sweep_reader import CELL_FIELDS, CURVE_FIELDS, LR_FIELDS, SWEEP_FIELDS, find_sweeps, read_sweep
from rolora.reports.theory_data import (COMPARISON_FIELDS, FLOOR_FIELDS, RATE_FIELDS, THEOREM_FIELDS,
                                        theory_rows)

FILES = {  # name in the data folder -> columns
    "lm-sweeps.csv": SWEEP_FIELDS,
    "lm-cells.csv": CELL_FIELDS,
    "lm-curves.csv": CURVE_FIELDS,
    "lm-lr-choice.csv": LR_FIELDS,
    "theory-theorem.csv": THEOREM_FIELDS,
    "theory-ffa-floor.csv": FLOOR_FIELDS,
    "theory-comparison.csv": COMPARISON_FIELDS,
    "theory-nonconvex-rate.csv": RATE_FIELDS,
    "memory.csv": MEMORY_FIELDS,
}


def extract(sweeps_root: Path, theory_dir: Path, data_dir: Path) -> list[Path]:
    """Write every CSV of :data:`FILES` into ``data_dir``; returns the paths written."""
    rows: dict[str, list] = {name: [] for name in FILES}
    for folder in find_sweeps(sweeps_root):
        sweep, cells, curves, lrs = read_sweep(folder)
        rows["lm-sweeps.csv"].append(sweep)
        rows["lm-cells.csv"] += cells
        rows["lm-curves.csv"] += curves
        rows["lm-lr-choice.csv"] += lrs
    theory = theory_rows(theory_dir)
    rows["theory-theorem.csv"] = theory["theorem"]
    rows["theory-ffa-floor.csv"] = theory["ffa_floor"]
    rows["theory-comparison.csv"] = theory["comparison"]
    rows["theory-nonconvex-rate.csv"] = theory["nonconvex_rate"]
    rows["memory.csv"] = memory_rows()
    return [write_rows(Path(data_dir) / name, FILES[name], rows[name]) for name in FILES]
