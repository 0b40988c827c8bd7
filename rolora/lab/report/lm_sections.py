"""The language-model part of the report: one section per sweep, claim by claim.

Each section: the paper's claim and numbers, our table (mean ± std over finished seeds, with what is
unfinished), the pairwise outcomes of the claim's winner against its baselines, and the verdict by
:data:`rolora.lab.report.verdicts.RULE`. The client-count sweep also puts the paper's Table 1 averages
beside ours and judges its two halves (ties at the fewest clients, RoLoRA ahead at the most).
"""

from __future__ import annotations

from rolora.lab.report import verdicts as v
from rolora.lab.report.claims import ClaimRow
from rolora.lab.report.lm_results import Group, SweepResults
from rolora.lab.report.markdown import table
from rolora.lab.report.paper import CLAIMS, STANDARD, TABLE1_AVG, TIE_AT_3, SweepClaim

SWEEP_COMMAND = "rolora sweep {name}"
CLIENT_SWEEPS = ("clients", "clients-lr3", "clients-trec", "clients-trec-lr3")
"""Sweeps judged in two halves: ties at the fewest clients, RoLoRA ahead at the most (a one-column sweep: the
tie only)."""


def not_run(name: str) -> str:
    return (f"**Not run yet.** No `{name}` sweep was found. Run `{SWEEP_COMMAND.format(name=name)}`, then "
            "`rolora report` (see [Commands](#commands)).")


def paper_value(sweep: SweepResults, setting: str, method: str) -> float | None:
    axes = sweep.axes[setting]
    return TABLE1_AVG.get((axes.get("clients"), axes.get("rank")), {}).get(method)


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


FLOOR_MARK = " ‡"


def cell_text(group: Group | None) -> str:
    """'85.0 ± 1.0 (n=3); 1 pending', '– (3 pending)', or '–' where the method was not in the column; marked
    ‡ when every finished seed sits at the majority-class floor."""
    if group is None:
        return "–"
    missing = group.missing_text()
    if not group.seeds:
        return f"– ({missing})" if missing else "–"
    mark = FLOOR_MARK if group.at_floor() else ""
    return group.accuracy().text() + mark + (f"; {missing}" if missing else "")


def floor_legend(sweep: SweepResults) -> str:
    """The ‡ legend, naming each marked setting's majority-class accuracy ('' when nothing is marked)."""
    marked = [s for s in sweep.settings()
              if any(g.at_floor() for g in sweep.groups[s].values())]
    if not marked:
        return ""
    floors = "; ".join(f"{s} {100 * sweep.floor(s):.1f} %" for s in marked)
    return ("\n\n‡ every finished seed within 1 point of the majority-class test accuracy (always answering the "
            f"test split's most common label: {floors}): that model learned nothing in that column.")


def winner_of(sweep: SweepResults, claim: SweepClaim) -> str | None:
    """The claim's winner if the sweep ran it, else the sweep's first non-standard label (a variant), else
    the claim's winner anyway (its pairs then say it was not run)."""
    if claim.winner in sweep.methods():
        return claim.winner
    others = [m for m in sweep.methods() if m not in STANDARD]
    return others[0] if others else claim.winner


def pairs_at(sweep: SweepResults, setting: str, winner: str, against: tuple[str, ...]) -> list[v.Pair]:
    results = sweep.accuracies(setting)
    baselines = list(against) or [m for m in sweep.methods() if m != winner]
    return v.beats_all(winner, results, baselines, sweep.floor(setting))


def outcome_lines(sweep: SweepResults, winner: str, against: tuple[str, ...]) -> list[str]:
    """One line per setting that has at least one finished pair."""
    by_setting = {s: pairs_at(sweep, s, winner, against) for s in sweep.settings()}
    return [f"- {s}: {winner} against " + "; ".join(p.text() for p in pairs) for s, pairs in by_setting.items() if pairs]


def _extreme(sweep: SweepResults, pick) -> list[str]:
    """Settings with RoLoRA at the fewest (pick=min) or most (pick=max) clients, one per other axis value
    (a reference column without RoLoRA, e.g. the one-client centralised run, is not one of them)."""
    with_clients = [s for s in sweep.settings() if "clients" in sweep.axes[s] and "rolora" in sweep.groups[s]]
    if not with_clients:
        return []
    n = pick(sweep.axes[s]["clients"] for s in with_clients)
    return [s for s in with_clients if sweep.axes[s]["clients"] == n]


def _pairs_text(pairs: list[v.Pair]) -> str:
    return "; ".join(p.text() for p in pairs) or "no finished pair"


def _ours(sweep: SweepResults, setting: str) -> str:
    acc = sweep.accuracies(setting)
    finished = [f"{m} {acc[m].short()}" for m in sweep.methods() if m in acc and acc[m].n]
    return f"{setting}: " + " / ".join(finished) if finished else f"{setting}: nothing finished yet"


def _paper(sweep: SweepResults, setting: str) -> str:
    """The paper's GLUE averages at this setting's client count and rank, or '–'."""
    values = [(m, paper_value(sweep, setting, m)) for m in sweep.methods()]
    return " / ".join(f"{m} {p:.2f}" for m, p in values if p is not None) or "–"


def _paper_text(sweep: SweepResults, setting: str, claim: SweepClaim, tie: bool = False) -> str:
    """Table 1's averages for the client-count sweep on Rotten Tomatoes; elsewhere the claim's words (for
    its tie half, the tie's, not the 50-client win's)."""
    if claim.sweep == "clients":
        return _paper(sweep, setting)
    return TIE_AT_3 if tie else claim.short


def degradation_lines(sweep: SweepResults) -> list[str]:
    """Each method's change from the fewest to the most clients, at each other-axis value (points)."""
    few, most = _extreme(sweep, min), _extreme(sweep, max)
    lines = []
    for a in few:
        for b in most:
            others_a = {k: x for k, x in sweep.axes[a].items() if k != "clients"}
            others_b = {k: x for k, x in sweep.axes[b].items() if k != "clients"}
            if a == b or others_a != others_b:
                continue
            acc_a, acc_b = sweep.accuracies(a), sweep.accuracies(b)
            changes = [f"{m} {100 * (acc_b[m].mean - acc_a[m].mean):+.1f}" for m in sweep.methods()
                       if acc_a.get(m) and acc_b.get(m) and acc_a[m].n and acc_b[m].n]
            if changes:
                lines.append(f"- {a} → {b} (mean accuracy, points): " + ", ".join(changes))
    return lines


def clients_verdicts(sweep: SweepResults, claim: SweepClaim, summary: list[ClaimRow]) -> list[str]:
    """The two halves of the client-count claim, each by the rule."""
    lines = []
    few = _extreme(sweep, min)
    for s in few:
        pairs = pairs_at(sweep, s, "rolora", claim.against)
        verdict = v.tie_verdict(pairs)
        summary.append(ClaimRow(f"{claim.title}: ties at the fewest clients ({s})",
                                _paper_text(sweep, s, claim, tie=True), _ours(sweep, s), verdict))
        lines.append(f"- **Ties at the fewest clients ({s})**: **{verdict}** — {_pairs_text(pairs)}.")
    for s in _extreme(sweep, max):
        if s in few:
            continue
        pairs = pairs_at(sweep, s, "rolora", claim.against)
        verdict = v.win_verdict(pairs)
        summary.append(ClaimRow(f"{claim.title}: RoLoRA ahead at the most clients ({s})", _paper_text(sweep, s, claim),
                                _ours(sweep, s), verdict))
        lines.append(f"- **RoLoRA ahead at the most clients ({s})**: **{verdict}** — {_pairs_text(pairs)}.")
    return lines


def sweep_section(claim: SweepClaim, sweep: SweepResults | None, summary: list[ClaimRow],
                  figure: str | None = None) -> str:
    out = [f"### {claim.title} (`{claim.sweep}` sweep)", "",
           f"**Paper's claim.** {claim.claim}", "", f"**Paper's numbers.** {claim.paper_numbers}", ""]
    if sweep is None or not sweep.groups:
        summary.append(ClaimRow(claim.title, claim.short, "–", v.NOT_RUN))
        return "\n".join(out + [not_run(claim.sweep), ""])
    out += ["**Ours** (final test accuracy %, mean ± sample std over finished seeds):", "",
            results_table(sweep, with_paper=claim.sweep == "clients"), ""]
    if figure:
        out += [f"![{claim.sweep} sweep: test accuracy vs round]({figure})", ""]
    winner = winner_of(sweep, claim)
    if winner is None:
        summary.append(ClaimRow(claim.title, claim.short, "the variant was not run", v.NOT_RUN))
        return "\n".join(out + ["No method other than the standard ones was run: the claim's variant is missing.", ""])
    out += [f"Outcomes of {winner} by the rule ([verdict rule](#how-verdicts-are-computed)):", ""]
    out += outcome_lines(sweep, winner, claim.against) or ["- no setting has a finished pair yet"]
    out.append("")
    if claim.sweep in CLIENT_SWEEPS:
        drops = degradation_lines(sweep)
        if drops:
            out += ["Change as clients grow (the paper: the baselines fall, RoLoRA holds):", ""] + drops + [""]
    if claim.sweep in CLIENT_SWEEPS:
        out += ["**Verdicts.**", ""] + clients_verdicts(sweep, claim, summary)
    else:
        judged = _extreme(sweep, max) if claim.most_clients_only else sweep.settings()
        pairs = [p for s in judged for p in pairs_at(sweep, s, winner, claim.against)]
        verdict = v.win_verdict(pairs)
        counts = {o: sum(p.outcome == o for p in pairs) for o in (v.AHEAD, v.BEHIND)}
        summary.append(ClaimRow(claim.title, claim.short, f"{winner} ahead in {counts[v.AHEAD]} of {len(pairs)} pairs, "
                                f"behind in {counts[v.BEHIND]}", verdict))
        where = f"at the most clients ({', '.join(judged)})" if claim.most_clients_only else "over every setting of the sweep"
        out.append(f"**Verdict: {verdict}** ({where}).")
    out += ["", f"Why at best *in kind*: {claim.stand_in}, so at best the paper's pattern, not its numbers, can be "
            "reproduced.", ""]
    return "\n".join(out)


def lm_sections(sweeps: dict[str, SweepResults], summary: list[ClaimRow], figures: dict[str, str]) -> str:
    """Every sweep the paper's claims need, in the paper's order (a missing one says how to run it)."""
    summary.append(ClaimRow("Table 1's own numbers (RoBERTa-Large, GLUE)", "RoLoRA 85.81 avg at 50 clients, r4",
                            "no RoBERTa-Large weights or GLUE data here; MiniLM-L6 on Rotten Tomatoes / TREC stands in",
                            v.NOT_TESTABLE))
    summary.append(ClaimRow("Llama-2-7B numbers (commonsense, 50 clients)", "RoLoRA ≈42.9 vs LoRA ≈33.1 / FFA ≈17.9",
                            "no 7B model or those benchmarks on a 2-core CPU; SmolLM2-135M on TREC stands in",
                            v.NOT_TESTABLE))
    return "\n".join(sweep_section(c, sweeps.get(c.sweep), summary, figures.get(c.sweep)) for c in CLAIMS)
