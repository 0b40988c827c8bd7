"""The report's appendix: each sweep's learning-rate cells and their validation accuracy by round.

The lr phase trains each (method, lr) on one seed and scores only the validation split; the sweep
picks each method's lr from those scores. They are shown as the evidence behind that choice (and as
all a sweep has before its main cells finish), never as a result: no verdict reads them.
"""

from __future__ import annotations

from collections import defaultdict

from rolora.lab.report.csv_files import number
from rolora.lab.report.lm_results import method_order
from rolora.lab.report.markdown import table

TITLE = "Learning-rate selection: validation curves"
NO_VERDICT = "used to choose the lr, never a verdict"


def _seeds_text(rows: list[dict[str, str]]) -> str:
    seeds = sorted({r["seed"] for r in rows}, key=lambda s: number(s) or 0)
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(seeds)


def rounds_text(row: dict[str, str]) -> str:
    """'18/30' (rounds logged of rounds planned), or '10' when the config plans fewer than were logged (a
    config changed under a resumed run: its plan no longer describes the logged rounds)."""
    logged, planned = number(row["rounds_logged"]), number(row["rounds_planned"])
    if logged is None:
        return "–"
    return f"{logged:.0f}/{planned:.0f}" if planned is not None and planned >= logged else f"{logged:.0f}"


def curve_text(points: list[dict[str, str]]) -> str:
    """'r6 0.756 · r12 0.812 · r18 0.828': every scored round after round 0 (the untrained model)."""
    later = sorted((int(number(p["round"])), number(p["val_accuracy"])) for p in points if number(p["round"]))
    return " · ".join(f"r{t} {acc:.3f}" for t, acc in later) or "round 0 only"


def sweep_part(name: str, rows: list[dict[str, str]], cells: list[dict[str, str]]) -> str:
    """One sweep: its label, whether it has any test result yet, and one table row per lr cell that scored."""
    by_cell: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_cell[r["cell"]].append(r)
    firsts = sorted((points[0] for points in by_cell.values()),
                    key=lambda r: (r["setting"], method_order(r["method"]), number(r["lr"]) or 0.0))
    body = [[r["setting"], r["method"], f"{number(r['lr']):g}", r["status"], rounds_text(r),
             curve_text(by_cell[r["cell"]])] for r in firsts]
    initial = sorted({f"{number(r['val_accuracy']):.3f}" for r in rows if number(r["round"]) == 0})
    out = [f"### `{name}`: learning-rate cells", "",
           f"Validation accuracy at each evaluated round (validation split, lr phase, {_seeds_text(rows)} — "
           f"{NO_VERDICT})" + (f"; round 0, the untrained model: {' / '.join(initial)}." if initial else ".")]
    main_done = [c for c in cells if c["sweep"] == name and c["phase"] == "main" and c["status"] == "done"]
    if not main_done:
        out.append(f"`{name}` has no test results yet (no main cell has finished), so no verdict is drawn from it.")
    unscored = [c for c in cells if c["sweep"] == name and c["phase"] == "lr" and c["cell"] not in by_cell]
    if unscored:
        plural = "s" if len(unscored) != 1 else ""
        out.append(f"{len(unscored)} more lr cell{plural} not scored yet (pending or failed).")
    out += ["", table(["setting", "method", "lr", "status", "rounds", "validation accuracy by round"], body), ""]
    return "\n".join(out)


def lr_curves_section(rows: list[dict[str, str]], cells: list[dict[str, str]]) -> str:
    """The appendix for every sweep with scored lr cells (rows of ``lm-lr-curves.csv``); '' when none has."""
    by_sweep: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_sweep[r["sweep"]].append(r)
    if not by_sweep:
        return ""
    intro = ("Each sweep first trains every method at each learning rate of its grid on one seed and scores the "
             "validation split (never the test set); the lr each method then runs with is chosen from these "
             "scores (once made, the choice is in *Learning rates chosen* above). Rounds: logged / planned. All points are in "
             "`lm-lr-curves.csv`.")
    return "\n".join([f"## {TITLE}", "", intro, ""] + [sweep_part(n, by_sweep[n], cells) for n in sorted(by_sweep)])
