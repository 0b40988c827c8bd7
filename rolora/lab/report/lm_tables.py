"""A sweep's results table: per setting and method, the final test accuracy over seeds, the test set's
own standard error beside it, the paper's Table 1 average where it has one, and what is unfinished."""

from __future__ import annotations

from rolora.lab.report.lm_results import Group, SweepResults
from rolora.lab.report.markdown import table
from rolora.lab.report.paired import sampling_se
from rolora.lab.report.paper import TABLE1_AVG

FLOOR_MARK = " ‡"


def paper_value(sweep: SweepResults, setting: str, method: str) -> float | None:
    axes = sweep.axes[setting]
    return TABLE1_AVG.get((axes.get("clients"), axes.get("rank")), {}).get(method)


def cell_text(group: Group | None) -> str:
    """'85.0 ± 1.0 (n=3; test SE 1.1); 1 pending', '– (3 pending)', or '–' where the method was not in the
    column; marked ‡ when every finished seed sits at the majority-class floor. The test SE is
    √(p(1 − p)/n) at the mean accuracy over the n test examples (left out where n is unknown)."""
    if group is None:
        return "–"
    missing = group.missing_text()
    if not group.seeds:
        return f"– ({missing})" if missing else "–"
    acc, examples = group.accuracy(), group.test_examples()
    note = f"test SE {100 * sampling_se(acc.mean, examples):.1f}" if examples else ""
    mark = FLOOR_MARK if group.at_floor() else ""
    return acc.text(note=note) + mark + (f"; {missing}" if missing else "")


def floor_legend(sweep: SweepResults) -> str:
    """The ‡ legend, naming each marked setting's majority-class accuracy ('' when nothing is marked)."""
    marked = [s for s in sweep.settings()
              if any(g.at_floor() for g in sweep.groups[s].values())]
    if not marked:
        return ""
    floors = "; ".join(f"{s} {100 * sweep.floor(s):.1f} %" for s in marked)
    return ("\n\n‡ every finished seed within 1 point of the majority-class test accuracy (always answering the "
            f"test split's most common label: {floors}): that model learned nothing in that column.")


def results_table(sweep: SweepResults, with_paper: bool) -> str:
    """Rows: methods; per setting, ours (and the paper's GLUE average where it has one)."""
    settings = sweep.settings()
    headers = ["method"]
    for s in settings:
        headers += ([f"{s}: paper"] if with_paper else []) + [f"{s}: ours"]
    rows = []
    for m in sweep.methods():
        row = [m]
        for s in settings:
            if with_paper:
                p = paper_value(sweep, s, m)
                row.append("–" if p is None else f"{p:.2f}")
            row.append(cell_text(sweep.groups[s].get(m)))
        rows.append(row)
    return table(headers, rows) + floor_legend(sweep)
