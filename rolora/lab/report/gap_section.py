"""The product-averaging gap by regime: the mechanism the paper credits, as our runs measured it.

Sweep cells log per round the mean over layers of s·‖Σp_k B_k A_k − (Σp_k B_k)(Σp_k A_k)‖ relative to
the round's ideal update (``product_gap``) and the clients' relative spread (``client_drift``;
:mod:`rolora.federated.diagnostics`). The extraction keeps each cell's mean over its rounds
(``lm-cells.csv``); here they are averaged over seeds per sweep, setting and method, beside the local
work per round, which the paper's explanation says drives the gap. Sweeps run before the logging say
"not measured"; a method whose server cannot see the clients' factors (personalised) logs None.
"""

from __future__ import annotations

from rolora.lab.report.ledger import Ledger
from rolora.lab.report.lm_results import Group, SweepResults
from rolora.lab.report.markdown import table
from rolora.lab.report.seeds import over_seeds

NOT_MEASURED = "not measured"
NOT_MEASURABLE = "not logged (the server cannot see the factors)"


def _local(group: Group) -> str:
    c = group.config
    return "–" if c is None else f"{c.train.local_steps} × {c.train.batch_size}"


def _mean(values: list[tuple], index: int) -> str:
    """Over the seeds that logged it: mean ± std (n), or why there is none."""
    if all(g[2] is None for g in values):
        return NOT_MEASURED
    logged = [g[index] for g in values if g[2] and g[index] is not None]
    return over_seeds(logged).text(scale=1.0, digits=3) if logged else NOT_MEASURABLE


def gap_rows(sweep: SweepResults, ledger: Ledger) -> list[list[str]]:
    """One row per setting and method; a sweep that logged no gap anywhere, one row in all."""
    groups = [(s, m, g) for s in sweep.settings() for m, g in sweep.groups[s].items()
              if g.gaps and not all(ledger.run(c) != c for c in g.cells.values())]
    if not groups:
        return []
    if all(gap[2] is None for _, _, g in groups for gap in g.gaps):
        local = " / ".join(dict.fromkeys(_local(g) for _, _, g in groups))
        return [[sweep.name, "all", "all", local, NOT_MEASURED, NOT_MEASURED]]
    return [[sweep.name, s, m, _local(g), _mean(g.gaps, 0), _mean(g.gaps, 1)] for s, m, g in groups]


def gap_section(sweeps: dict[str, SweepResults], ledger: Ledger) -> str:
    rows = [r for name in sorted(sweeps) for r in gap_rows(sweeps[name], ledger)]
    return "\n".join([
        "### Product-averaging gap by regime", "",
        "The error of averaging A and B separately, s·‖Σp_k B_k A_k − (Σp_k B_k)(Σp_k A_k)‖ / ‖ΔW̄‖ (mean over "
        "layers, then over a cell's rounds), and the clients' drift √(Σp_k‖ΔW_k − ΔW̄‖²) / ‖ΔW̄‖, per finished "
        "cell, mean ± std over seeds; the paper explains FedAvg-LoRA's loss at 50 clients by the first, which "
        "grows with the second, which grows with the local work per round (steps × batch). RoLoRA and "
        "FFA-LoRA share one factor every round, so their gap is 0 by construction. Cells that are another "
        "sweep's runs (twins) are shown there only.", "",
        table(["sweep", "setting", "method", "local steps × batch", "mean gap", "mean drift"], rows) if rows
        else "No finished cell yet.", ""])
