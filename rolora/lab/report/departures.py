"""The report's opening: where our sweeps depart from the paper's recipe, and what they measured about it.

Each row of the table is a :data:`rolora.lab.report.regimes.DEPARTURES` entry: the paper's value, and
ours as read from every sweep's configs (a value used by few sweeps names them; a sweep that has not
run says so). Each departure then gets its evidence, computed from the results:

- *controlled comparisons*: settings that differ in this departure alone (the other departures, the
  total samples and the model, data, rank, targets, layers and optimiser equal), each with RoLoRA's
  paired difference to FedAvg-LoRA (points, 95 % CI); a setting whose runs are another's twins is
  left out (it would repeat that one);
- *at the paper's value*: the sweeps that use it, with their verdicts (or that they have not run).
"""

from __future__ import annotations

from rolora.lab.report import verdicts as v
from rolora.lab.report.claims import ClaimRow
from rolora.lab.report.ledger import Ledger
from rolora.lab.report.lm_results import SweepResults
from rolora.lab.report.lm_sections import pair_short
from rolora.lab.report.markdown import table
from rolora.lab.report.regimes import DEPARTURES, Departure, control_key, other_differences
from rolora.lab.report.sweep_specs import SweepSpec

WINNER, BASELINE = "rolora", "fedavg-lora"
MANY = 4
"""A value used by more sweeps than this is given as a count, not a list of names."""


def _finished(sweep: SweepResults | None) -> bool:
    return sweep is not None and any(g.seeds for groups in sweep.groups.values() for g in groups.values())


def status(name: str, specs: dict[str, SweepSpec], sweeps: dict[str, SweepResults]) -> str:
    """'' for a sweep with results, else why it has none."""
    if _finished(sweeps.get(name)):
        return ""
    return " (no finished cell)" if specs[name].ran else " (not run yet)"


def ours(dep: Departure, specs: dict[str, SweepSpec], sweeps: dict[str, SweepResults]) -> str:
    """Each value our sweeps used, most used first, with the sweeps that used it."""
    by_value: dict[str, list[str]] = {}
    for name in sorted(specs):
        for value in dict.fromkeys(dep.value(c) for c in specs[name].configs.values()):
            if value is not None:
                by_value.setdefault(value, []).append(name)
    parts = []
    for value, names in sorted(by_value.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        who = f"{len(names)} sweeps" if len(names) > MANY else ", ".join(
            f"`{n}`{status(n, specs, sweeps)}" for n in names)
        parts.append(f"{value}: {who}")
    return "; ".join(parts) or "–"


def _settings(sweeps: dict[str, SweepResults], ledger: Ledger) -> list[tuple[str, str, v.Pair, object]]:
    """(sweep, setting, RoLoRA against FedAvg-LoRA, RoLoRA's config) where both finished and are not both
    another sweep's runs."""
    out = []
    for name, sweep in sorted(sweeps.items()):
        for s in sweep.settings():
            groups = sweep.groups[s]
            x, y = groups.get(WINNER), groups.get(BASELINE)
            if x is None or y is None or x.config is None or not x.seeds or not y.seeds:
                continue
            if ledger.twins_of(x.cells) and ledger.twins_of(y.cells):
                continue  # the same runs as another sweep's setting: counted there
            pair = v.compare(WINNER, x.accuracy(), BASELINE, y.accuracy(), sweep.floor(s))
            out.append((name, s, pair, x.config))
    return out


def _where(name: str, setting: str) -> str:
    return f"`{name}`" + ("" if setting == "default" else f" {setting}")


def _aside(notes: list[str]) -> str:
    return f" ({', '.join(notes)})" if notes else ""


def controlled(dep: Departure, settings: list[tuple]) -> list[str]:
    """One line per set of settings that differ in ``dep`` alone."""
    groups: dict[tuple, list[tuple]] = {}
    for entry in settings:
        groups.setdefault(control_key(entry[3], dep), []).append(entry)
    lines = []
    for entries in groups.values():
        values = list(dict.fromkeys(dep.value(e[3]) for e in entries))
        if len(values) < 2 or None in values:
            continue
        # name what else tells the entries apart (rounds, RoLoRA's lr) only where it does
        show_lr = len({e[3].train.lr for e in entries}) > 1
        show_rounds = len({e[3].total_rounds for e in entries}) > 1
        parts = []
        for value in values:
            at = [e for e in entries if dep.value(e[3]) == value]
            parts.append(f"{value}: " + ", ".join(
                _where(n, s) + _aside([f"{c.total_rounds} rounds"] * show_rounds + [f"RoLoRA lr {c.train.lr:g}"] * show_lr)
                + " " + pair_short(p).removeprefix(f"{BASELINE} ") + f" {p.outcome}" for n, s, p, c in at))
        also = other_differences([e[3] for e in entries])
        lines.append("; ".join(parts) + (f" (also differing: {', '.join(also)})" if also else ""))
    return lines


def at_paper_value(dep: Departure, specs: dict[str, SweepSpec], sweeps: dict[str, SweepResults],
                   summary: list[ClaimRow]) -> list[str]:
    """The sweeps with the paper's value, each with its verdicts or why it has none."""
    out = []
    for name in sorted(specs):
        if not any(dep.at_paper(c) for c in specs[name].configs.values()):
            continue
        verdicts = list(dict.fromkeys(r.verdict for r in summary if r.sweep == name))
        why = status(name, specs, sweeps)
        out.append(f"`{name}`" + (why if why else f" (verdict: {', '.join(verdicts)})" if verdicts else " (no claim)"))
    return out


def evidence(dep: Departure, specs: dict[str, SweepSpec], sweeps: dict[str, SweepResults], summary: list[ClaimRow],
             settings: list[tuple]) -> str:
    found = controlled(dep, settings)
    paper = at_paper_value(dep, specs, sweeps, summary)
    text = ("RoLoRA − FedAvg-LoRA (points, 95 % CI) where only this differs — " + " | ".join(found) + "." if found
            else "no two finished settings differ in this alone.")
    return text + (" At the paper's value: " + ", ".join(paper) + "." if paper else " No sweep uses the paper's value.")


def departures_section(specs: dict[str, SweepSpec], sweeps: dict[str, SweepResults], summary: list[ClaimRow],
                       ledger: Ledger) -> str:
    rows = [[d.name, d.paper, ours(d, specs, sweeps)] for d in DEPARTURES]
    settings = _settings(sweeps, ledger)
    lines = [f"- **{d.name}**: {evidence(d, specs, sweeps, summary, settings)}" for d in DEPARTURES]
    return "\n".join([
        "## Where our sweeps depart from the paper", "",
        "The paper's recipe (`shared/reference/rolora-paper.md` §5, the authors' supplement and code) against "
        "what our sweeps ran, read from every sweep's spec and configs (a spec not run yet included):", "",
        table(["", "paper (rolora-paper.md §5)", "our sweeps"], rows), "",
        "**Evidence on each** (what our runs measured about it; a verdict word is defined in "
        "[How verdicts are computed](#how-verdicts-are-computed)):", "", *lines, ""])
