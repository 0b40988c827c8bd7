"""A sweep found here, completed with its committed rows: cells finished on another machine stay.

Run folders are not committed, so a sweep resumed in a fresh checkout (``--only`` its missing cells)
holds only those cells as done. Its committed rows for the cells finished earlier are kept, cell by
cell, when they were extracted from the same spec (the sweep row's ``spec``, word for word): a cell
done here replaces its committed rows, a cell not done here keeps its committed rows if they say done.
A changed spec discards every committed row of the sweep (they belong to another experiment).

A cell recorded as the twin of another sweep's done cell (``rolora sweep --recorded``: the same
config; ``copied_from`` names it as "sweep/cell") takes that cell's committed results and curve under
its own name (:func:`fill_borrowed`).
"""

from __future__ import annotations

from typing import Any

from rolora.lab.sweep.record import RECORDED
from rolora.lab.report.sweep_reader import status_counts

Rows = list[dict[str, Any]]


def _by_cell(rows: Rows) -> dict[str, Rows]:
    out: dict[str, Rows] = {}
    for r in rows:
        out.setdefault(str(r["cell"]), []).append(r)
    return out


def carried_cells(found: list[Rows], committed: list[Rows]) -> set[str]:
    """The cells whose committed rows stand in for the found ones: done there, not done here, same spec."""
    if not committed[0] or not found[0] or committed[0][0].get("spec") != found[0][0].get("spec"):
        return set()
    done_before = {str(r["cell"]) for r in committed[1] if r.get("status") == "done"}
    return {str(r["cell"]) for r in found[1] if r.get("status") != "done" and str(r["cell"]) in done_before}


def merge_sweep(found: list[Rows], committed: list[Rows]) -> tuple[list[Rows], set[str]]:
    """(one sweep's rows: [sweep row], cells, curves, lr choices, lr curves, as read_sweep's order, with the
    carried cells' committed rows in place of the found ones; the carried cells). ``committed`` holds the
    same five lists as read back from the CSVs (this sweep's rows only, possibly empty)."""
    carried = carried_cells(found, committed)
    if not carried:
        return found, carried
    (sweep,), cells, curves, lrs, lr_curves = found
    old_cells = {str(r["cell"]): r for r in committed[1]}
    old_curves, old_lr_curves = _by_cell(committed[2]), _by_cell(committed[4])
    new_curves, new_lr_curves = _by_cell(curves), _by_cell(lr_curves)
    merged_cells = [old_cells[str(c["cell"])] if str(c["cell"]) in carried else c for c in cells]
    ids = [str(c["cell"]) for c in cells]  # one order for every per-cell list: the sweep's cell order
    merged_curves = [r for cid in ids for r in (old_curves if cid in carried else new_curves).get(cid, [])]
    merged_lr_curves = [r for cid in ids for r in (old_lr_curves if cid in carried else new_lr_curves).get(cid, [])]
    chosen_here = {r["method"] for r in lrs}  # an lr chosen by carried lr cells only: its committed row
    merged_lrs = lrs + [r for r in committed[3] if r["method"] not in chosen_here]
    return [[dict(sweep, **status_counts(merged_cells))], merged_cells, merged_curves, merged_lrs, merged_lr_curves], carried


RESULTS = ("rounds_logged", "final_round", "final_test_accuracy", "final_test_loss", "wall_s", "upload_bytes",
           "train_samples", "device", "test_majority", "mean_product_gap", "mean_client_drift", "gap_rounds",
           "final_dp_epsilon", "dp_delta")
"""A cell row's results (the rest names the cell: sweep, id, labels, setting)."""


def fill_borrowed(parts: list[Rows], committed: list[Rows]) -> set[str]:
    """Give each recorded cell of one sweep's rows (``parts`` as merge_sweep's) whose ``copied_from`` names a
    done cell of ``committed`` (all sweeps' rows, as read back from the CSVs) that cell's results and curve,
    in place; the cells filled. A twin not found leaves the cell recorded (it counts as not run)."""
    (sweep,), cells, curves = parts[0], parts[1], parts[2]
    done = {f"{r['sweep']}/{r['cell']}": r for r in committed[1] if r.get("status") == "done"}
    source_curves: dict[str, Rows] = {}
    for r in committed[2]:
        source_curves.setdefault(f"{r['sweep']}/{r['cell']}", []).append(r)
    filled: dict[str, str] = {}
    for c in cells:
        source = done.get(str(c.get("copied_from") or ""))
        if c.get("status") == RECORDED and source is not None:
            c.update({k: source.get(k, "") for k in RESULTS}, status="done")  # a column newer than the rows: empty
            filled[str(c["cell"])] = str(c["copied_from"])
    if filled:
        own = _by_cell(curves)
        names = {str(c["cell"]): c for c in cells}
        curves[:] = [r for cid in names for r in (
            [dict(s, status="done", **{k: names[cid][k] for k in ("sweep", "cell", "method", "seed", "phase", "setting")})
             for s in source_curves.get(filled[cid], [])]
            if cid in filled else own.get(cid, []))]
        sweep.update(status_counts(cells))
    return set(filled)
